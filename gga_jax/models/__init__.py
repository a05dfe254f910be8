"""Backbones on the adapter graph: ViT (vit.py)."""
