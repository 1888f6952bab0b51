"""`aigc serve`: the warm server (app.py, api.py, serve.py) and the CLI's way to it (discovery.py, client.py).

Importing this package imports nothing: the client side must stay free of torch, FastAPI and uvicorn.
"""
