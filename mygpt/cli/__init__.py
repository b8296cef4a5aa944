"""Commands: settings as flags, and the programs' entry points."""
