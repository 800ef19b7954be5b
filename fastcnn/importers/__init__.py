"""Importers: turn model files from other frameworks into the Graph IR."""
