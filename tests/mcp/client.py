"""MCP client for tests/tests/mcp.rs: the official MCP Python SDK (PyPI `mcp`) against qrng-bridge.

Usage: client.py URL TOKEN|- SCRIPT_JSON
SCRIPT_JSON is a list of calls: {"tool": name, "arguments": {...}} or {"list": true}.
Prints one JSON object per call on stdout: the tool list (name, input schema) or the call's
result (isError, structuredContent, text). The Rust test makes every assertion.
"""

import asyncio
import json
import sys

from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def main(url: str, token: str, script: list) -> None:
    headers = {} if token == "-" else {"Authorization": f"Bearer {token}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                for step in script:
                    if step.get("list"):
                        tools = await session.list_tools()
                        out = {"tools": [{"name": t.name, "inputSchema": t.input_schema}
                                         for t in tools.tools]}
                    else:
                        r = await session.call_tool(step["tool"], step.get("arguments", {}))
                        out = {
                            "isError": bool(r.is_error),
                            "structuredContent": r.structured_content,
                            "text": [c.text for c in r.content if getattr(c, "type", "") == "text"],
                        }
                    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
