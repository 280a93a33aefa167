"""The MCP face (SPEC section 12): the chat history as tools of a Model Context Protocol server,
built on the official ``mcp`` SDK.

- ``tools``: the tools over a :class:`~chathistory.store.ChatHistory`; each call's user and
  store come from the MCP session (a :class:`~chathistory.mcp_server.tools.Caller`), never
  from a tool argument.
- ``stdio``: ``chathistory mcp --user USER``, one user over stdin / stdout.
- ``http``: the streamable HTTP transport at ``/mcp`` of the HTTP service, behind its bearer
  JWT (the token's ``sub`` is the user) and the SDK's DNS-rebinding protection.
- ``cli``: the ``chathistory mcp`` command.

Nothing here is imported by ``import chathistory``; the SDK is imported only by these modules.
"""
