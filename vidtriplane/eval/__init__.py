"""Evaluation: image-quality and identity metrics with their aggregation."""
