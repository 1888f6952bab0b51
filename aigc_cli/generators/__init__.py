"""The core API: one module per modality, each a streaming generator plus a collecting wrapper."""
