"""The MCP conformance suite's "everything server" on session_manager's public API.

Every tool, resource, resource template, prompt, completion and log the
server scenarios of ``@modelcontextprotocol/conformance`` expect, with the
names and behaviour of the suite's own TypeScript everything server
(``examples/servers/typescript/everything-server.ts`` in its repository).
One handler serves both protocol eras on the same URL: sessions
(``initialize``, 2025-11-25 and before) and stateless requests (2026-07-28).
Run it (gevent, http://127.0.0.1:8000/mcp), then the suite::

    python examples/everything_server.py [--host 127.0.0.1] [--port 8000] [--redis redis://127.0.0.1:6379/0]
    MCP_REDIS_URL=redis://127.0.0.1:6379/0 gunicorn -k gevent -w 2 'examples.everything_server:create_app()'
    npx @modelcontextprotocol/conformance server --url http://127.0.0.1:8000/mcp --suite all
    npx @modelcontextprotocol/conformance@0.2.0-alpha.12 server --url http://127.0.0.1:8000/mcp --requirements 2026-07-28

Sessions and stored events are in memory (one process) unless a Redis URL
is given (``--redis`` or ``$MCP_REDIS_URL``): then any number of workers
share them. Streams are resumable either way (an event store).

What it shows beyond the example server (examples/server.py): a tool that
asks the client for something and waits for the answer (``ctx.request``:
sampling, elicitation, roots), a tool that ends its SSE stream early, the
client fetching the result with ``GET`` + ``Last-Event-ID`` (``ctx.close_stream``),
and how the same ``ctx.request`` code asks a stateless (2026-07-28) client
in rounds: see "Asking the client" below.
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


@tool(
    "test_custom_header",
    "Echoes its region; 2026-07-28 clients mirror it in the Mcp-Param-Region header, which the transport checks",
    schema({"region": string("A region name", **{"x-mcp-header": "Region"})}),
)
def custom_header(args: Params, ctx: RequestContext) -> Result:
    return {"content": [text(f"region: {args.get('region')}")]}


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
@tool("test_logging_tool", "Logs as it works: nothing is sent when a stateless request set no logLevel")
def tool_with_logging(args: Params, ctx: RequestContext) -> Result:
    # Each message leaves on the call's SSE stream at once (time.sleep yields under gevent).
    for step, message in enumerate(("Tool execution started", "Tool processing data", "Tool execution completed")):
        if step:
            time.sleep(0.05)
        ctx.log("info", message)  # dropped below the session's logging/setLevel, or the request's logLevel
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


# -- asking the client --------------------------------------------------------------------
#
# ``ctx.request(method, params)`` returns the client's answer in both eras:
# - in a session, the request goes out on the call's SSE stream and the call
#   waits for the client to POST the answer (to any worker);
# - in a stateless request (2026-07-28, ``ctx.stateless``) it cannot wait: the
#   call ends there with an ``input_required`` result naming what it needs
#   (``key=`` names it), plus a sealed ``requestState`` holding the answers
#   already given. The client retries with the answers; the tool runs again
#   from the start and, this time, ``ctx.request`` returns them. So a tool asks
#   the same things in the same order every time, and does nothing before its
#   last question that it must not do twice. ``ctx.request_all`` asks several
#   things at once (one round).
# The transport checks the client's capabilities (stateless: -32021 without
# them) and rejects a tampered, expired or foreign ``requestState``.

Ask = tuple[str, Params]  # (method, params) of a request to the client


def ask_user(message: str, field: str, kind: str = "string") -> Ask:
    """``elicitation/create``: a form with one required field."""
    return "elicitation/create", {"message": message, "requestedSchema": schema({field: {"type": kind}}, (field,))}


def ask_model(prompt: str, max_tokens: int = 100) -> Ask:
    """``sampling/createMessage``: one user message for the client's LLM."""
    return "sampling/createMessage", {"messages": [{"role": "user", "content": text(prompt)}], "maxTokens": max_tokens}


ASK_ROOTS: Ask = ("roots/list", {})
#: The client capability each kind of request needs.
NEEDS = {"elicitation/create": "elicitation", "sampling/createMessage": "sampling", "roots/list": "roots"}


def ask_client(ctx: RequestContext, ask: Ask, what: str) -> Result | str:
    """The client's answer to *ask*; if it failed, the text explaining why."""
    try:
        return ctx.request(*ask)
    except ClientRequestError as error:
        if error.reason == "capability":
            raise  # a protocol error, not a tool failure (stateless: -32021, HTTP 400)
        return f"{what} not supported or error: {error.message}"


def answered(answer: Result, field: str) -> Any:
    """A field of the form the user accepted (None if they declined or left it out)."""
    content = answer.get("content") if answer.get("action") == "accept" else None
    return content.get(field) if isinstance(content, dict) else None


def model_reply(answer: Result) -> str:
    """The text of a ``sampling/createMessage`` result."""
    content = answer.get("content")
    blocks = content if isinstance(content, list) else [content]  # one block, or several since 2025-11-25
    return next((b["text"] for b in blocks if isinstance(b, dict) and "text" in b), "No response")


def root_uris(answer: Result) -> str:
    """The URIs of a ``roots/list`` result."""
    return ", ".join(str(r.get("uri")) for r in answer.get("roots", []) if isinstance(r, dict)) or "none"


@tool(
    "test_sampling",
    "Tests server-initiated sampling (LLM completion request)",
    schema({"prompt": string("The prompt to send to the LLM")}, required=("prompt",)),
)
def sampling(args: Params, ctx: RequestContext) -> Result:
    answer = ask_client(ctx, ask_model(str(args.get("prompt", ""))), "Sampling")
    if isinstance(answer, str):
        return {"content": [text(answer)], "isError": True}
    return {"content": [text(f"LLM response: {model_reply(answer)}")]}


def elicit(ctx: RequestContext, message: str, requested: dict[str, Any], prefix: str) -> Result:
    """Ask the user (``elicitation/create``); the result tells what they did."""
    answer = ask_client(ctx, ("elicitation/create", {"message": message, "requestedSchema": requested}), "Elicitation")
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


# -- tools of the 2026-07-28 scenarios (they work in a session too) ------------------------
# The keys are those the suite expects in inputRequests.

ASK_NAME = ask_user("What is your name?", "name")
ASK_CAPITAL = ask_model("What is the capital of France?")


@tool("test_input_required_result_elicitation", "Asks the user's name (elicitation), then greets them")
def greet(args: Params, ctx: RequestContext) -> Result:
    answer = ctx.request(*ASK_NAME, key="user_name")  # an answer that is not an object: -32602
    return {"content": [text(f"Hello, {answered(answer, 'name') or 'stranger'}!")]}


@tool("test_input_required_result_sampling", "Asks the client's LLM a question (sampling)")
def capital(args: Params, ctx: RequestContext) -> Result:
    answer = ctx.request(*ASK_CAPITAL, key="capital_question")
    return {"content": [text(f"LLM response: {model_reply(answer)}")]}


@tool("test_input_required_result_list_roots", "Asks the client for its roots (roots/list)")
def list_roots(args: Params, ctx: RequestContext) -> Result:
    answer = ctx.request(*ASK_ROOTS, key="client_roots")
    return {"content": [text(f"Client roots: {root_uris(answer)}")]}


@tool("test_input_required_result_request_state", "Asks for a confirmation; the answer comes back with requestState")
@tool("test_input_required_result_tampered_state", "Asks for a confirmation (a tampered requestState is refused)")
def confirm(args: Params, ctx: RequestContext) -> Result:
    answer = ctx.request(*ask_user("Please confirm", "ok", "boolean"), key="confirm")
    # A stateless retry reaches the tool only once the transport has verified its requestState.
    return {"content": [text(f"state-ok: confirmed={compact(answered(answer, 'ok'))}")]}


@tool("test_input_required_result_multiple_inputs", "Asks the user, the LLM and the client's roots at once")
def multiple_inputs(args: Params, ctx: RequestContext) -> Result:
    answers = ctx.request_all(  # one round: all three requests in one input_required result
        {"user_name": ASK_NAME, "greeting": ask_model("Generate a greeting", 50), "client_roots": ASK_ROOTS}
    )
    name, greeting = answered(answers["user_name"], "name"), model_reply(answers["greeting"])
    return {"content": [text(f"{greeting} {name}; roots: {root_uris(answers['client_roots'])}")]}


@tool("test_input_required_result_multi_round", "Asks two questions, the second once the first is answered")
def multi_round(args: Params, ctx: RequestContext) -> Result:
    # Stateless: round 1 ends at step 1; round 2 at step 2, with a new requestState holding step 1's answer.
    name = answered(ctx.request(*ask_user("Step 1: What is your name?", "name"), key="step1"), "name")
    color = answered(ctx.request(*ask_user("Step 2: What is your favorite color?", "color"), key="step2"), "color")
    return {"content": [text(f"{name}'s favorite color is {color}")]}


@tool("test_input_required_result_capabilities", "Asks only what the client declared it can answer")
def within_capabilities(args: Params, ctx: RequestContext) -> Result:
    declared = ctx.client_capabilities or {}
    asks = {"user_name": ASK_NAME, "capital_question": ASK_CAPITAL, "client_roots": ASK_ROOTS}
    answers = ctx.request_all({key: ask for key, ask in asks.items() if NEEDS[ask[0]] in declared})
    return {"content": [text(f"Answered: {', '.join(answers) or 'nothing (no capability declared)'}")]}


@tool("test_missing_capability", "Needs the client's sampling capability (without it: error -32021, 2026-07-28)")
def missing_capability(args: Params, ctx: RequestContext) -> Result:
    answer = ctx.request(*ask_model("Say hello"))  # ClientRequestError (reason "capability") when undeclared
    return {"content": [text(f"LLM response: {model_reply(answer)}")]}


@tool("test_streaming_elicitation", "Reports progress, then asks the user: never a request on a stateless stream")
def streaming_elicitation(args: Params, ctx: RequestContext) -> Result:
    ctx.progress(50, 100, "Asking the user")  # a no-op without _meta.progressToken
    # In a session the question is a request on this call's stream; stateless, an input_required result.
    answer = ctx.request(*ask_user("Continue?", "ok", "boolean"), key="confirm")
    return {"content": [text(f"Streaming complete: ok={compact(answered(answer, 'ok'))}")]}


#: This process's app (create_app sets it): the test_trigger_* tools notify through it.
running_app: McpApp | None = None


# The suite's hooks: a real server calls tools_list_changed() etc. after changing the list.
# Sessions get the notification on their GET stream, 2026-07-28 clients on their listen stream.
@tool("test_trigger_tool_change", "Notifies every client that the tool list changed")
def trigger_tool_change(args: Params, ctx: RequestContext) -> Result:
    assert running_app is not None
    running_app.tools_list_changed()
    return {"content": [text("notifications/tools/list_changed sent")]}


@tool("test_trigger_prompt_change", "Notifies every client that the prompt list changed")
def trigger_prompt_change(args: Params, ctx: RequestContext) -> Result:
    assert running_app is not None
    running_app.prompts_list_changed()
    return {"content": [text("notifications/prompts/list_changed sent")]}


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
    {
        "name": "test_input_required_result_prompt",
        "title": "Prompt Asking The User",
        "description": "A prompt that asks the user for its context first (elicitation)",
    },
]


def user(*contents: dict[str, Any]) -> list[dict[str, Any]]:
    """Prompt messages from the user, one per content block."""
    return [{"role": "user", "content": content} for content in contents]


def prompt_messages(name: str, args: dict[str, str], ctx: RequestContext) -> list[dict[str, Any]]:
    if name == "test_input_required_result_prompt":  # prompts/get may ask the client too
        answer = ctx.request(*ask_user("What context should the prompt use?", "context"), key="user_context")
        return user(text(f"Answer with this context in mind: {answered(answer, 'context')}"))
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
    return {"description": prompt["description"], "messages": prompt_messages(prompt["name"], args, ctx)}


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
    global running_app
    redis_url = redis_url or os.environ.get(REDIS_URL_ENV)
    managers = redis_managers(redis_url) if redis_url else memory_managers()
    # Both eras on one URL. Stateless requests need nothing else: requestState is sealed with a
    # secret the workers share through the managers (or give state_keys=[...] to choose it).
    running_app = McpApp(handle, managers=managers, server_info=SERVER_INFO, capabilities=CAPABILITIES)
    return running_app


def main(argv: list[str] | None = None) -> None:
    """Serve under gevent until SIGINT or SIGTERM, then end every stream and close the managers."""
    import gevent
    import gevent.event

    from session_manager.pywsgi import WSGIServer  # gevent.pywsgi, streams written from the event loop

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
