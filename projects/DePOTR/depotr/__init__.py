"""DePOTR."""
