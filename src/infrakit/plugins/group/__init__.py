"""The group plugin: converges declared groups with what instance plugins describe."""
