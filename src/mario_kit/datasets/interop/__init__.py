"""Import and export of other dataset layouts (the seed project's HDF5 layout)."""
