"""Container images built from bytes, without a toolchain or a base image.

:mod:`infrakit.images.tinyelf` writes the smallest executables that do a container's job
(``hello``: print a line; ``pause``: stay alive until told to stop), and
:mod:`infrakit.images.scratch` wraps one of them in an image that ``docker load`` takes.
The Docker instance plugin's tests and walk-through run members of that ``pause`` image:
it exists offline, is 116 bytes, and stops at once on ``docker stop``.
"""
