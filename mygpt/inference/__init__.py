"""Inference: sampling and generation, the fast copy, precision, the chat."""
