"""Evaluation: loss, perplexity and scores of a model on text."""
