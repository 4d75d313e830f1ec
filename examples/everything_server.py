"""The MCP conformance suite's "everything server" on session_manager's public API.

Every tool, resource, resource template, prompt, completion and log the
server scenarios of ``@modelcontextprotocol/conformance`` expect, with the
names and behaviour of the suite's own TypeScript everything server
(``examples/servers/typescript/everything-server.ts`` in its repository).
Run it (gevent, http://127.0.0.1:8000/mcp), then the suite::

    python examples/everything_server.py [--host 127.0.0.1] [--port 8000] [--redis redis://127.0.0.1:6379/0]
    MCP_REDIS_URL=redis://127.0.0.1:6379/0 gunicorn -k gevent -w 2 'examples.everything_server:create_app()'
    npx @modelcontextprotocol/conformance server --url http://127.0.0.1:8000/mcp --suite all

Sessions and stored events are in memory (one process) unless a Redis URL
is given (``--redis`` or ``$MCP_REDIS_URL``): then any number of workers
share them. Streams are resumable either way (an event store).

What it shows beyond the example server (examples/server.py): a tool that
asks the client for something and waits for the answer (``ctx.request``:
sampling, elicitation) and a tool that ends its SSE stream early, the
client fetching the result with ``GET`` + ``Last-Event-ID`` (``ctx.close_stream``).
"""

if __name__ == "__main__":
    # Patch before anything else is imported, and only when run as a script.
    from gevent import monkey

    monkey.patch_all()

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for `examples.server`

import argparse
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from typing import Any

from examples.server import REDIS_URL_ENV, SHUTDOWN_TIMEOUT, memory_managers, redis_managers
from session_manager.wsgi import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    ClientRequestError,
    JsonRpcError,
    McpApp,
    RequestContext,
)

logger = logging.getLogger(__name__)

Params = dict[str, Any]
Result = dict[str, Any]
Tool = Callable[[Params, RequestContext], Result]

SERVER_INFO = {"name": "session-manager-everything-server", "version": "1.0.0"}
CAPABILITIES = {
    "tools": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "prompts": {"listChanged": True},
    "logging": {},
    "completions": {},
}
#: The ``logger`` of the log messages the server sends about itself.
LOGGER = "conformance-test-server"
#: A 1x1 red PNG and a minimal WAV file, base64.
IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
AUDIO = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="


def text(value: str) -> dict[str, Any]:
    """A text content block."""
    return {"type": "text", "text": value}


def compact(value: Any) -> str:
    """JSON as JavaScript's ``JSON.stringify`` writes it (no spaces)."""
    return json.dumps(value, separators=(",", ":"))


def schema(properties: dict[str, Any] | None = None, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object JSON Schema (a tool's ``inputSchema``, an elicitation's ``requestedSchema``)."""
    result: dict[str, Any] = {"type": "object", "properties": properties or {}}
    if required:
        result["required"] = list(required)
    return result


def string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


# -- tools -------------------------------------------------------------------------------

#: name -> (its entry in tools/list, the function that runs it).
TOOLS: dict[str, tuple[dict[str, Any], Tool]] = {}


def tool(name: str, description: str, input_schema: dict[str, Any] | None = None) -> Callable[[Tool], Tool]:
    """Register a tool: ``tools/list`` shows it, ``tools/call`` runs it."""

    def register(function: Tool) -> Tool:
        TOOLS[name] = ({"name": name, "description": description, "inputSchema": input_schema or schema()}, function)
        return function

    return register


@tool("test_simple_text", "Tests simple text content response")
def simple_text(args: Params, ctx: RequestContext) -> Result:
    return {"content": [text("This is a simple text response for testing.")]}


@tool("test_image_content", "Tests image content response")
def image_content(args: Params, ctx: RequestContext) -> Result:
    return {"content": [{"type": "image", "data": IMAGE, "mimeType": "image/png"}]}


@tool("test_audio_content", "Tests audio content response")
def audio_content(args: Params, ctx: RequestContext) -> Result:
    return {"content": [{"type": "audio", "data": AUDIO, "mimeType": "audio/wav"}]}


@tool("test_embedded_resource", "Tests embedded resource content response")
def embedded_resource(args: Params, ctx: RequestContext) -> Result:
    resource = {
        "uri": "test://embedded-resource",
        "mimeType": "text/plain",
        "text": "This is an embedded resource content.",
    }
    return {"content": [{"type": "resource", "resource": resource}]}


@tool("test_multiple_content_types", "Tests response with multiple content types (text, image, resource)")
def multiple_content_types(args: Params, ctx: RequestContext) -> Result:
    resource = {
        "uri": "test://mixed-content-resource",
        "mimeType": "application/json",
        "text": compact({"test": "data", "value": 123}),
    }
    return {
        "content": [
            text("Multiple content types test:"),
            {"type": "image", "data": IMAGE, "mimeType": "image/png"},
            {"type": "resource", "resource": resource},
        ]
    }


@tool("test_tool_with_logging", "Tests tool that emits log messages during execution")
def tool_with_logging(args: Params, ctx: RequestContext) -> Result:
    # Each message leaves on the call's SSE stream at once (time.sleep yields under gevent).
    for step, message in enumerate(("Tool execution started", "Tool processing data", "Tool execution completed")):
        if step:
            time.sleep(0.05)
        ctx.log("info", message)  # dropped below the session's logging/setLevel
    return {"content": [text("Tool with logging executed successfully")]}


@tool("test_tool_with_progress", "Tests tool that reports progress notifications")
def tool_with_progress(args: Params, ctx: RequestContext) -> Result:
    for step, progress in enumerate((0, 50, 100)):
        if step:
            time.sleep(0.05)
        ctx.progress(progress, 100, f"Completed step {progress} of 100")  # a no-op without _meta.progressToken
    return {"content": [text(str(ctx.progress_token if ctx.progress_token is not None else 0))]}


@tool("test_error_handling", "Tests error response handling")
def error_handling(args: Params, ctx: RequestContext) -> Result:
    raise RuntimeError("This tool intentionally returns an error for testing")  # call_tool: isError


@tool(
    "test_reconnection",
    "Tests SSE stream disconnection and client reconnection (SEP-1699). Server will close the stream "
    "mid-call and send the result after client reconnects.",
)
def reconnection(args: Params, ctx: RequestContext) -> Result:
    # End the call's SSE stream now, with a retry hint: the client comes back with GET + Last-Event-ID.
    # The result is stored as it is sent, so whichever worker the GET reaches replays it; closing
    # just before returning means it is stored before the client can be back (the TypeScript
    # server sleeps 100 ms here; with several workers a GET meanwhile would find nothing yet).
    ctx.close_stream()
    return {
        "content": [
            text(
                "Reconnection test completed successfully. If you received this, "
                "the client properly reconnected after stream closure."
            )
        ]
    }


def ask_client(ctx: RequestContext, method: str, params: Params, what: str) -> Result | str:
    """Send *method* to the client and wait for its result; on failure, the text explaining it."""
    try:
        return ctx.request(method, params)  # on the call's SSE stream; the client POSTs its answer
    except ClientRequestError as error:
        return f"{what} not supported or error: {error.message}"


@tool(
    "test_sampling",
    "Tests server-initiated sampling (LLM completion request)",
    schema({"prompt": string("The prompt to send to the LLM")}, required=("prompt",)),
)
def sampling(args: Params, ctx: RequestContext) -> Result:
    message = {"role": "user", "content": text(str(args.get("prompt", "")))}
    answer = ask_client(ctx, "sampling/createMessage", {"messages": [message], "maxTokens": 100}, "Sampling")
    if isinstance(answer, str):
        return {"content": [text(answer)], "isError": True}
    content = answer.get("content")
    blocks = content if isinstance(content, list) else [content]  # one block, or several since 2025-11-25
    reply = next((b["text"] for b in blocks if isinstance(b, dict) and "text" in b), "No response")
    return {"content": [text(f"LLM response: {reply}")]}


def elicit(ctx: RequestContext, message: str, requested: dict[str, Any], prefix: str) -> Result:
    """Ask the user (``elicitation/create``); the result tells what they did."""
    answer = ask_client(ctx, "elicitation/create", {"message": message, "requestedSchema": requested}, "Elicitation")
    if isinstance(answer, str):
        return {"content": [text(answer)], "isError": True}
    return {
        "content": [text(f"{prefix}: action={answer.get('action')}, content={compact(answer.get('content') or {})}")]
    }


@tool(
    "test_elicitation",
    "Tests server-initiated elicitation (user input request)",
    schema({"message": string("The message to show the user")}, required=("message",)),
)
def elicitation(args: Params, ctx: RequestContext) -> Result:
    requested = schema({"response": string("User's response")}, required=("response",))
    return elicit(ctx, str(args.get("message", "")), requested, "User response")


@tool("test_elicitation_sep1034_defaults", "Tests elicitation with default values per SEP-1034")
def elicitation_defaults(args: Params, ctx: RequestContext) -> Result:
    requested = schema(
        {
            "name": string("User name", default="John Doe"),
            "age": {"type": "integer", "description": "User age", "default": 30},
            "score": {"type": "number", "description": "User score", "default": 95.5},
            "status": string("User status", enum=["active", "inactive", "pending"], default="active"),
            "verified": {"type": "boolean", "description": "Verification status", "default": True},
        }
    )
    message = "Please review and update the form fields with defaults"
    return elicit(ctx, message, {**requested, "required": []}, "Elicitation completed")


def titled(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"const": value, "title": title} for value, title in pairs]


@tool("test_elicitation_sep1330_enums", "Tests elicitation with enum schema improvements per SEP-1330")
def elicitation_enums(args: Params, ctx: RequestContext) -> Result:
    options = ["option1", "option2", "option3"]
    requested = schema(
        {
            "untitledSingle": string("Select one option", enum=options),
            "titledSingle": string(
                "Select one option with titles",
                oneOf=titled(("value1", "First Option"), ("value2", "Second Option"), ("value3", "Third Option")),
            ),
            "legacyEnum": string(
                "Select one option (legacy)",
                enum=["opt1", "opt2", "opt3"],
                enumNames=["Option One", "Option Two", "Option Three"],
            ),
            "untitledMulti": {
                "type": "array",
                "description": "Select multiple options",
                "minItems": 1,
                "maxItems": 3,
                "items": {"type": "string", "enum": options},
            },
            "titledMulti": {
                "type": "array",
                "description": "Select multiple options with titles",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "anyOf": titled(("value1", "First Choice"), ("value2", "Second Choice"), ("value3", "Third Choice"))
                },
            },
        }
    )
    message = "Please select options from the enum fields"
    return elicit(ctx, message, {**requested, "required": []}, "Elicitation completed")


#: SEP-1613 and SEP-2106: a JSON Schema 2020-12 inputSchema, listed exactly as written.
JSON_SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


@tool(
    "json_schema_2020_12_tool",
    "Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)",
    JSON_SCHEMA_2020_12,
)
def json_schema_2020_12(args: Params, ctx: RequestContext) -> Result:
    return {"content": [text(f"JSON Schema 2020-12 tool called with: {compact(args)}")]}


# -- resources and prompts ---------------------------------------------------------------

RESOURCES: dict[str, dict[str, Any]] = {
    "test://static-text": {
        "name": "static-text",
        "title": "Static Text Resource",
        "description": "A static text resource for testing",
        "mimeType": "text/plain",
        "text": "This is the content of the static text resource.",
    },
    "test://static-binary": {
        "name": "static-binary",
        "title": "Static Binary Resource",
        "description": "A static binary resource (image) for testing",
        "mimeType": "image/png",
        "blob": IMAGE,
    },
    "test://watched-resource": {
        "name": "watched-resource",
        "title": "Watched Resource",
        "description": "A resource clients can subscribe to",
        "mimeType": "text/plain",
        "text": "Watched resource content",
    },
}
TEMPLATE = {
    "uriTemplate": "test://template/{id}/data",
    "name": "template",
    "title": "Resource Template",
    "description": "A resource template with parameter substitution",
    "mimeType": "application/json",
}
TEMPLATE_URI = re.compile(r"test://template/([^/]+)/data")

PROMPTS: list[dict[str, Any]] = [
    {"name": "test_simple_prompt", "title": "Simple Test Prompt", "description": "A simple prompt without arguments"},
    {
        "name": "test_prompt_with_arguments",
        "title": "Prompt With Arguments",
        "description": "A prompt with required arguments",
        "arguments": [
            {"name": "arg1", "description": "First test argument", "required": True},
            {"name": "arg2", "description": "Second test argument", "required": True},
        ],
    },
    {
        "name": "test_prompt_with_embedded_resource",
        "title": "Prompt With Embedded Resource",
        "description": "A prompt that includes an embedded resource",
        "arguments": [{"name": "resourceUri", "description": "URI of the resource to embed", "required": True}],
    },
    {
        "name": "test_prompt_with_image",
        "title": "Prompt With Image",
        "description": "A prompt that includes image content",
    },
]


def user(*contents: dict[str, Any]) -> list[dict[str, Any]]:
    """Prompt messages from the user, one per content block."""
    return [{"role": "user", "content": content} for content in contents]


def prompt_messages(name: str, args: dict[str, str]) -> list[dict[str, Any]]:
    if name == "test_simple_prompt":
        return user(text("This is a simple prompt for testing."))
    if name == "test_prompt_with_arguments":
        return user(text(f"Prompt with arguments: arg1='{args['arg1']}', arg2='{args['arg2']}'"))
    if name == "test_prompt_with_embedded_resource":
        resource = {
            "uri": args["resourceUri"],
            "mimeType": "text/plain",
            "text": "Embedded resource content for testing.",
        }
        return user({"type": "resource", "resource": resource}, text("Please process the embedded resource above."))
    return user({"type": "image", "data": IMAGE, "mimeType": "image/png"}, text("Please analyze the image above."))


# -- the handler -------------------------------------------------------------------------


def call_tool(params: Params, ctx: RequestContext) -> Result:
    name = params.get("name")
    if name not in TOOLS:
        raise JsonRpcError(INVALID_PARAMS, f"Tool {name} not found")
    try:
        return TOOLS[name][1](params.get("arguments") or {}, ctx)
    except JsonRpcError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing tool is a result the model reads, not a protocol error
        return {"content": [text(str(exc))], "isError": True}


def read_resource(params: Params, ctx: RequestContext) -> Result:
    uri = str(params.get("uri"))
    if uri in RESOURCES:
        resource = RESOURCES[uri]
        body = {key: resource[key] for key in ("mimeType", "text", "blob") if key in resource}
        return {"contents": [{"uri": uri, **body}]}
    match = TEMPLATE_URI.fullmatch(uri)
    if match is None:
        raise JsonRpcError(INVALID_PARAMS, "Resource not found", {"uri": uri})  # SEP-2164
    data = {"id": match[1], "templateTest": True, "data": f"Data for ID: {match[1]}"}
    return {"contents": [{"uri": uri, "mimeType": "application/json", "text": compact(data)}]}


def subscription(verb: str) -> Tool:
    """``resources/subscribe`` or ``unsubscribe``: the transport records it once this accepts."""

    def change(params: Params, ctx: RequestContext) -> Result:
        uri = str(params.get("uri"))
        if uri not in RESOURCES and not TEMPLATE_URI.fullmatch(uri):
            raise JsonRpcError(INVALID_PARAMS, "Resource not found", {"uri": uri})
        ctx.log("info", f"{verb} resource: {uri}", logger=LOGGER)
        return {}

    return change


def get_prompt(params: Params, ctx: RequestContext) -> Result:
    name, args = params.get("name"), params.get("arguments") or {}
    prompt = next((p for p in PROMPTS if p["name"] == name), None)
    if prompt is None:
        raise JsonRpcError(INVALID_PARAMS, f"Prompt {name} not found")
    missing = [
        a["name"] for a in prompt.get("arguments", []) if a["required"] and not isinstance(args.get(a["name"]), str)
    ]
    if missing:
        raise JsonRpcError(INVALID_PARAMS, f"Missing required arguments: {', '.join(missing)}")
    return {"description": prompt["description"], "messages": prompt_messages(prompt["name"], args)}


def set_level(params: Params, ctx: RequestContext) -> Result:
    ctx.log("info", f"Log level set to: {params.get('level')}", logger=LOGGER)
    return {}  # the transport stores the level once this accepted it


METHODS: dict[str, Tool] = {
    "initialize": lambda params, ctx: {},  # McpApp fills protocolVersion, serverInfo and capabilities
    "ping": lambda params, ctx: {},
    "tools/list": lambda params, ctx: {"tools": [entry for entry, _ in TOOLS.values()]},
    "tools/call": call_tool,
    "resources/list": lambda params, ctx: {
        "resources": [
            {"uri": uri, **{k: v for k, v in r.items() if k not in ("text", "blob")}} for uri, r in RESOURCES.items()
        ]
    },
    "resources/templates/list": lambda params, ctx: {"resourceTemplates": [TEMPLATE]},
    "resources/read": read_resource,
    "resources/subscribe": subscription("Subscribed to"),
    "resources/unsubscribe": subscription("Unsubscribed from"),
    "prompts/list": lambda params, ctx: {"prompts": PROMPTS},
    "prompts/get": get_prompt,
    "logging/setLevel": set_level,
    # Minimal, as in the TypeScript server: no suggestions.
    "completion/complete": lambda params, ctx: {"completion": {"values": [], "total": 0, "hasMore": False}},
}


def handle(message: dict[str, Any], ctx: RequestContext) -> Result | None:
    """McpApp's handler: dispatch one JSON-RPC message."""
    method = message.get("method")
    function = METHODS.get(method) if isinstance(method, str) else None
    if function is None:
        if "id" in message and method:
            raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        return None  # notifications (notifications/initialized...) and answers to ctx.request
    return function(message.get("params") or {}, ctx)


def create_app(redis_url: str | None = None) -> McpApp:
    """The WSGI application, the factory for gunicorn (``'examples.everything_server:create_app()'``).

    Sessions and events in Redis with a URL (*redis_url*, else ``$MCP_REDIS_URL``), else in memory.
    Every worker calls it after the fork, so nothing is created at import.
    """
    redis_url = redis_url or os.environ.get(REDIS_URL_ENV)
    managers = redis_managers(redis_url) if redis_url else memory_managers()
    return McpApp(handle, managers=managers, server_info=SERVER_INFO, capabilities=CAPABILITIES)


def main(argv: list[str] | None = None) -> None:
    """Serve under gevent until SIGINT or SIGTERM, then end every stream and close the managers."""
    import gevent
    import gevent.event
    from gevent.pywsgi import WSGIServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    parser.add_argument(
        "--redis",
        default=os.environ.get(REDIS_URL_ENV),
        metavar="URL",
        help=f"keep sessions and events in Redis (default: ${REDIS_URL_ENV}, else in memory)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(args.redis)
    server = WSGIServer((args.host, args.port), app, log=None)
    server.start()
    where = "in Redis" if args.redis else "in memory"
    logger.info("everything server on http://%s:%d/mcp, sessions %s", args.host, server.server_port, where)
    stopped = gevent.event.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stopped.set)
    stopped.wait()
    server.close()  # no new connections
    app.close(timeout=SHUTDOWN_TIMEOUT)  # end every stream, wait for tool calls, close the managers
    server.stop(timeout=1)


if __name__ == "__main__":
    main()
