"""Trained models put to use: loading a checkpoint for sampling (`load.load_model`), the chat
session, held-out evaluation and BLEU."""
