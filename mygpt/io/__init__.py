"""Files and weights: the loader, model files, GPT-2 download and conversion."""
