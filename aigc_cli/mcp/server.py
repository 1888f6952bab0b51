"""MCP over the official `mcp` SDK's low-level Server: tools (tools.py) with their own JSON Schemas,
results as content plus structuredContent, progress notifications while a call runs, cancellation, and the
output folder's files as resources. `run_stdio` is `aigc mcp`; `mount` adds `/mcp` (streamable HTTP) to
`aigc serve`'s app, behind its Host check and API key.
"""

from __future__ import annotations

import base64
import math
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import AigcError, UsageError
from .tools import TOOLS, Cancelled, Outcome, Toolbox

INSTRUCTIONS = (
    "aigc makes text, images and speech with local models. Every image and audio file is saved in the "
    "output folder with the record of how it was made (prompt, model, seed, settings); structuredContent "
    "gives that record, and the same seed gives the same output again. list_models says what can run here."
)


def check_sdk() -> None:
    """The `mcp` SDK is an optional extra: AigcError (exit 1) saying how to install it when missing."""
    try:
        import mcp.server.lowlevel  # noqa: F401
    except ImportError:
        raise AigcError(
            "aigc mcp needs the MCP SDK (the mcp package), which is not installed here: "
            "pip install 'aigc[mcp]', or make install with mcp among EXTRAS"
        ) from None


def build_server(toolbox: Toolbox) -> Any:
    """The MCP Server (mcp.server.lowlevel.Server) over `toolbox`."""
    import anyio
    import mcp_types as types
    from mcp.server.lowlevel import Server
    from mcp.shared.exceptions import MCPError

    async def list_tools(ctx: Any, params: Any) -> Any:
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=tool.name,
                    title=tool.title,
                    description=tool.description,
                    input_schema=tool.input_schema(),
                    output_schema=tool.output,
                    annotations=types.ToolAnnotations(
                        read_only_hint=tool.modality is None, open_world_hint=False, destructive_hint=False
                    ),
                )
                for tool in TOOLS.values()
            ]
        )

    async def call_tool(ctx: Any, params: Any) -> Any:
        cancelled = threading.Event()
        send, receive = anyio.create_memory_object_stream[tuple[float, float | None, str | None]](math.inf)
        outcome: list[Outcome] = []

        def progress(done: float, total: float | None, message: str | None) -> None:
            anyio.from_thread.run_sync(send.send_nowait, (done, total, message))

        async def work() -> None:
            try:
                outcome.append(
                    await anyio.to_thread.run_sync(
                        toolbox.call, params.name, params.arguments, progress, cancelled
                    )
                )
            except Cancelled:
                pass
            finally:
                send.close()

        async with anyio.create_task_group() as group:
            group.start_soon(work)
            try:
                async with receive:
                    async for done, total, message in receive:
                        await ctx.session.report_progress(done, total, message)
            except anyio.get_cancelled_exc_class():
                # The generation stops at its next step or token; the group waits for its thread.
                cancelled.set()
                toolbox.state.console.info(f"aigc: {params.name}: cancelled by the client")
                raise
        return _result(outcome[0])

    async def list_resources(ctx: Any, params: Any) -> Any:
        files = await anyio.to_thread.run_sync(toolbox.files)
        return types.ListResourcesResult(
            resources=[
                types.Resource(uri=path.as_uri(), name=path.name, mime_type=media, size=path.stat().st_size)
                for path, media in files
            ]
        )

    async def read_resource(ctx: Any, params: Any) -> Any:
        uri = str(params.uri)
        try:
            data, media = await anyio.to_thread.run_sync(toolbox.resource, uri)
        except UsageError as exc:
            raise MCPError(types.INVALID_PARAMS, exc.message) from None
        blob = base64.b64encode(data).decode("ascii")
        return types.ReadResourceResult(
            contents=[types.BlobResourceContents(uri=uri, mime_type=media, blob=blob)]
        )

    return Server(
        "aigc",
        version=__version__,
        title="aigc: text, images and speech from local models",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
    )


def _result(outcome: Outcome) -> Any:
    """A CallToolResult: the text, each file as image or audio content and a resource link, the warnings
    as text (an agent reads content), the record as structuredContent; isError with the one line."""
    import mcp_types as types

    if outcome.error is not None:
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=outcome.error)], is_error=True
        )
    content: list[Any] = []
    if outcome.text is not None:
        content.append(types.TextContent(type="text", text=outcome.text))
    for path, media in outcome.files:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        kind = types.ImageContent if media.startswith("image/") else types.AudioContent
        content.append(
            kind(type="image" if kind is types.ImageContent else "audio", data=data, mime_type=media)
        )
        content.append(
            types.ResourceLink(
                type="resource_link",
                uri=path.as_uri(),
                name=path.name,
                mime_type=media,
                size=path.stat().st_size,
            )
        )
    for notice in outcome.notices:
        content.append(types.TextContent(type="text", text=f"aigc {notice['level']}: {notice['message']}"))
    return types.CallToolResult(content=content, structured_content=outcome.structured)


def run_stdio(
    out_dir: Path | None,
    keep_alive: str,
    preload_names: list[str],
    allow_pull: bool,
    no_log: bool,
    verbose: bool,
) -> None:
    """`aigc mcp`: serve the tools on stdin/stdout until the client closes stdin. stdout carries MCP alone
    (the SDK points the process's own stdout at stderr meanwhile); notes go to stderr."""
    import os
    import sys

    import anyio

    from ..config import go_offline
    from ..console import LogConsole
    from ..hub import SERVER_NO_PULL
    from ..server.state import ServerState, check_preload, check_settings, parse_keep_alive, preload
    from .tools import default_out_dir

    check_sdk()
    from mcp.server.stdio import stdio_server

    seconds = parse_keep_alive(keep_alive)
    check_settings()
    if not allow_pull:
        go_offline()  # calls never download: only what is cached or embedded runs
        os.environ[SERVER_NO_PULL] = "1"
    console = LogConsole(verbose=verbose)
    state = ServerState(seconds, preload_names, console)
    check_preload(state, preload_names)
    folder = (out_dir or default_out_dir()).expanduser().resolve()
    toolbox = Toolbox(state, folder, no_log=no_log)
    toolbox._folder()  # a folder that cannot be made fails now, with exit 4
    if sys.stdin.isatty():
        console.info("aigc: aigc mcp speaks MCP on stdin and stdout: an agent starts it (README: MCP)")
    preload(state, preload_names, console)
    state.start_reaper()
    server = build_server(toolbox)
    console.info(f"aigc: MCP tools ready on stdio; files go to {folder}")

    async def main() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    try:
        anyio.run(main)
    finally:
        state.stop()


def mount(app: Any, state: Any, out_dir: Path | None) -> bool:
    """Add `/mcp` (MCP's streamable HTTP) to `aigc serve`'s FastAPI app, the same tools as `aigc mcp`;
    False when the SDK is not installed. The app's Guard (Host check, API key) covers it."""
    try:
        from mcp.server.transport_security import TransportSecuritySettings
    except ImportError:
        return False
    from .tools import default_out_dir

    server = build_server(Toolbox(state, (out_dir or default_out_dir()).expanduser().resolve()))
    # The Host check is the app's Guard, the same for every route; the SDK's own would refuse a Host the
    # Guard allows (a server bound to an address with an API key).
    sub = server.streamable_http_app(
        streamable_http_path="/mcp",
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    app.router.routes.extend(sub.routes)
    previous = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> Any:
        async with server.session_manager.run(), previous(a) as inner:
            yield inner

    app.router.lifespan_context = lifespan
    return True
