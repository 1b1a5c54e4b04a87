"""Drives `governor mcp` through the official MCP Python SDK, for tests/tests/mcp.rs.

usage: client.py GOVERNOR [ARGS...]   (the server command, e.g. governor --socket S mcp)
       client.py --http URL TOKEN        (MCP's streamable HTTP transport, with a bearer token)

Reads one request per line on stdin, writes one JSON answer per line on stdout:
  {"list": true}                        -> {"tools": [{"name", "description", "input_schema"}]}
  {"call": NAME, "arguments": {...}}    -> {"is_error": bool, "structured": ..., "text": "..."}
A protocol error (as opposed to a tool error) is {"protocol_error": "..."}.
The first line written is {"server": NAME, "version": V} once the session is initialized.
"""

import asyncio
import json
import sys

import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client


def emit(value):
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def transport():
    if sys.argv[1] == "--http":
        client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {sys.argv[3]}"})
        return streamable_http_client(sys.argv[2], http_client=client)
    return stdio_client(StdioServerParameters(command=sys.argv[1], args=sys.argv[2:]))


async def main():
    async with transport() as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            emit({"server": init.server_info.name, "version": init.server_info.version})
            while True:
                line = await asyncio.to_thread(sys.stdin.readline)
                if not line:
                    return
                request = json.loads(line)
                try:
                    if request.get("list"):
                        listed = await session.list_tools()
                        emit({
                            "tools": [
                                {"name": t.name, "description": t.description, "input_schema": t.input_schema}
                                for t in listed.tools
                            ]
                        })
                        continue
                    result = await session.call_tool(request["call"], request.get("arguments", {}))
                    text = "".join(block.text for block in result.content if getattr(block, "type", "") == "text")
                    emit({"is_error": result.is_error, "structured": result.structured_content, "text": text})
                except Exception as error:  # a protocol error: the test asserts on it
                    emit({"protocol_error": f"{type(error).__name__}: {error}"})


asyncio.run(main())
