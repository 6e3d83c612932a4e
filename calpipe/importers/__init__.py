"""Importers: foreign raw data -> a calpipe L0 session (``calpipe import``)."""
