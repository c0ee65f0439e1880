"""infrakit-py: declarative, self-healing infrastructure over the InfraKit plugin protocol."""

__version__ = "0.1.0"
