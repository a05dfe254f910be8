"""Backbones on the adapter graph: ViT (vit.py), BERT/RoBERTa (text.py)."""
