"""An example uebench plugin package (see CONTRIBUTING.md)."""
