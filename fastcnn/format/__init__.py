"""The native .fcnn model format."""
