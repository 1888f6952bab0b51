"""`aigc mcp`: text, images and speech as tools for agents, over the Model Context Protocol.

tools.py holds what the tools are (their argument schemas, derived from the settings schema) and runs them
through the core, saving each output in one folder with the record a CLI file has; server.py speaks MCP
(the official `mcp` SDK) over stdio for `aigc mcp` and over streamable HTTP at `/mcp` on `aigc serve`.
"""
