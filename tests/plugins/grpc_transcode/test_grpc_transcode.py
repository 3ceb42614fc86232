"""grpc_transcode: JSON clients (curl, the gateway's own HTTP/1.1 client) → a real grpcio
server, from a descriptor set built with ``grpc_tools.protoc --include_imports`` at test
time. Nested path fields, body mapping, query parameters, repeated fields, enums, int64,
Timestamp, errors, server streaming as NDJSON and SSE, config errors with their line."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import grpc_tools
import orjson
import pytest

from portway.config.loader import ConfigError, load_config_text
from portway.http.client import simple_request
from tests.helpers import run_gateway

HERE = Path(__file__).parent
PROTOS = HERE / "protos"
#: google/api/{http,annotations}.proto ship once, with the runnable example
GOOGLE_API = HERE.parents[2] / "examples" / "grpc" / "protos"
WKT = Path(grpc_tools.__file__).parent / "_proto"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(descriptor set path, library_pb2 module)."""
    out = tmp_path_factory.mktemp("transcode")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{GOOGLE_API}",
            f"-I{WKT}",
            "--include_imports",
            f"--descriptor_set_out={out / 'library.pb'}",
            f"--python_out={out}",
            str(PROTOS / "library.proto"),
            str(GOOGLE_API / "google/api/annotations.proto"),
            str(GOOGLE_API / "google/api/http.proto"),
        ],
        check=True,
    )
    sys.path.insert(0, str(out))
    return out / "library.pb", importlib.import_module("library_pb2")


class Library:
    def __init__(self, pb: Any) -> None:
        self.pb = pb
        self.requests: list[Any] = []

    def handlers(self) -> grpc.GenericRpcHandler:
        pb = self.pb

        def get_book(req: Any, ctx: grpc.ServicerContext) -> Any:
            self.requests.append(req)
            b = pb.Book(
                name=f"shelves/{req.shelf.id}/books/{req.book_id}",
                title="Dune",
                pages=2**40,
                genre=req.genre or pb.FICTION,
                authors=list(req.fields) or ["Frank Herbert"],
            )
            b.published.FromJsonString("1965-08-01T00:00:00Z")
            return b

        def create_book(req: Any, ctx: grpc.ServicerContext) -> Any:
            self.requests.append(req)
            b = pb.Book()
            b.CopyFrom(req.book)
            b.name = f"shelves/{req.shelf_id}/books/new"
            return b

        def update_book(req: Any, ctx: grpc.ServicerContext) -> Any:
            self.requests.append(req)
            return req

        def list_books(req: Any, ctx: grpc.ServicerContext) -> Iterator[Any]:
            self.requests.append(req)
            for i in range(req.limit):
                yield pb.Book(name=f"shelves/{req.shelf_id}/books/{i}", pages=i)
            if req.limit == 2:
                ctx.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "only two")

        def fail(req: Any, ctx: grpc.ServicerContext) -> Any:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"no book {req.book_id}")

        de = {
            "GetBook": pb.GetBookRequest.FromString,
            "CreateBook": pb.CreateBookRequest.FromString,
            "UpdateBook": pb.Book.FromString,
            "ListBooks": pb.ListBooksRequest.FromString,
            "Fail": pb.GetBookRequest.FromString,
        }
        ser = pb.Book.SerializeToString
        u = grpc.unary_unary_rpc_method_handler
        return grpc.method_handlers_generic_handler(
            "library.v1.Library",
            {
                "GetBook": u(get_book, de["GetBook"], ser),
                "CreateBook": u(create_book, de["CreateBook"], ser),
                "UpdateBook": u(update_book, de["UpdateBook"], ser),
                "ListBooks": grpc.unary_stream_rpc_method_handler(list_books, de["ListBooks"], ser),
                "Fail": u(fail, de["Fail"], ser),
            },
        )


@pytest.fixture
async def gw(built: tuple[Path, Any]) -> AsyncIterator[tuple[Any, Library]]:
    desc, pb = built
    lib = Library(pb)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((lib.handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    cfg = {
        "upstreams": {
            "library": {"protocol": "h2c", "targets": [{"url": f"http://127.0.0.1:{port}"}]}
        },
        "routes": [
            {
                "name": "library-json",
                "match": {"paths": ["/v1/"]},
                "upstream": "library",
                "plugins": [
                    {
                        "name": "grpc_transcode",
                        "config": {
                            "descriptors": str(desc),
                            "services": ["library.v1.Library"],
                            "print_options": {"always_print_primitive_fields": True},
                        },
                    }
                ],
            }
        ],
    }
    try:
        async with run_gateway(cfg) as g:
            yield g, lib
    finally:
        await asyncio.to_thread(lambda: server.stop(0).wait(5))


async def req(
    g: Any, method: str, path: str, body: Any = None, headers: list[tuple[str, str]] | None = None
) -> tuple[int, Any, Any]:
    data = orjson.dumps(body) if body is not None else b""
    h = [("content-type", "application/json")] if body is not None else []
    r = await simple_request(method, g.url + path, body=data, headers=h + (headers or []))
    return r.status, r.headers, orjson.loads(r.body) if r.body else None


async def test_get_with_nested_path_fields_repeated_query_enum_int64_timestamp(
    gw: tuple[Any, Library],
) -> None:
    g, lib = gw
    status, headers, body = await req(
        g, "GET", "/v1/shelves/12/books/9007199254740993?fields=a&fields=b&genre=SCIENCE"
    )
    assert status == 200, body
    assert headers.get("content-type") == "application/json"
    assert body == {
        "name": "shelves/12/books/9007199254740993",
        "title": "Dune",
        "pages": "1099511627776",  # int64 as a JSON string
        "genre": "SCIENCE",  # enum by name
        "authors": ["a", "b"],  # repeated from repeated query parameters
        "published": "1965-08-01T00:00:00Z",  # Timestamp in RFC 3339
        "available": False,  # always_print_primitive_fields
        "copies": 0,
    }
    got = lib.requests[-1]
    assert got.shelf.id == 12 and got.book_id == 9007199254740993  # past 2^53: exact


async def test_post_body_field_and_patch_body_star(gw: tuple[Any, Library]) -> None:
    g, lib = gw
    book = {"title": "Solaris", "pages": "204", "genre": "FICTION", "authors": ["Lem"]}
    status, _, body = await req(g, "POST", "/v1/shelves/3/books", book)
    assert status == 200, body
    assert body["name"] == "shelves/3/books/new"
    assert body["title"] == "Solaris" and body["pages"] == "204"
    assert lib.requests[-1].book.authors == ["Lem"]
    status, _, body = await req(
        g, "PATCH", "/v1/shelves/1/books/2", {"title": "T", "published": "2000-01-02T03:04:05Z"}
    )
    assert status == 200, body
    assert body["name"] == "shelves/1/books/2"  # from the path template {name=shelves/*/books/*}
    assert body["published"] == "2000-01-02T03:04:05Z"
    # additional_bindings: PUT /v1/books/{name=**}
    status, _, body = await req(g, "PUT", "/v1/books/a/b/c", {"copies": 3})
    assert status == 200 and body["name"] == "a/b/c" and body["copies"] == 3


async def test_bad_requests_are_400(gw: tuple[Any, Library]) -> None:
    g, _ = gw
    status, _, body = await req(g, "GET", "/v1/shelves/x/books/1")
    assert status == 400 and "invalid request" in body["error"]
    status, _, body = await req(g, "GET", "/v1/shelves/1/books/1?nope=1")
    assert status == 400 and "nope" in body["error"]
    status, _, body = await req(g, "POST", "/v1/shelves/1/books", {"pages": "many"})
    assert status == 400
    status, _, body = await req(g, "GET", "/v1/unknown")
    assert status == 404


async def test_grpc_error_maps_to_http_status_and_json(gw: tuple[Any, Library]) -> None:
    g, _ = gw
    status, headers, body = await req(g, "GET", "/v1/fail/7")
    assert status == 404
    assert headers.get("content-type") == "application/json"
    assert body == {"code": 5, "message": "no book 7", "details": []}


async def curl(*args: str) -> bytes:
    p = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-m", "20", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await p.communicate()
    assert p.returncode == 0
    return out


async def test_server_streaming_read_with_curl_as_ndjson_and_sse(gw: tuple[Any, Library]) -> None:
    g, _ = gw
    out = await curl("-i", g.url + "/v1/shelves/5/books:stream?limit=3")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"content-type: application/x-ndjson" in head.lower()
    lines = [orjson.loads(x) for x in body.splitlines()]
    assert [x["name"] for x in lines] == [f"shelves/5/books/{i}" for i in range(3)]
    assert lines[1]["pages"] == "1"
    out = await curl(
        "-H", "accept: text/event-stream", g.url + "/v1/shelves/5/books:stream?limit=2"
    )
    events = [e for e in out.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events)
    docs = [orjson.loads(e[6:]) for e in events]
    assert docs[0]["name"] == "shelves/5/books/0"
    # the stream ended with RESOURCE_EXHAUSTED: a last error event
    assert docs[-1] == {"error": {"code": 8, "message": "only two", "details": []}}


def test_bad_descriptor_file_is_a_config_error_with_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\xff\xff not a descriptor set")
    text = f"""\
upstreams:
  g: {{protocol: h2c, targets: [{{url: http://127.0.0.1:1}}]}}
routes:
  - name: j
    match: {{paths: ["/v1/"]}}
    upstream: g
    plugins:
      - name: grpc_transcode
        config: {{descriptors: {bad}, services: [library.v1.Library]}}
"""
    with pytest.raises(ConfigError) as ei:
        load_config_text(text)
    msg = str(ei.value)
    assert "not a FileDescriptorSet" in msg
    assert "line 9" in msg or ":9" in msg


def test_unknown_service_is_a_config_error(built: tuple[Path, Any]) -> None:
    desc, _ = built
    text = f"""\
upstreams:
  g: {{protocol: h2c, targets: [{{url: http://127.0.0.1:1}}]}}
routes:
  - name: j
    match: {{paths: ["/v1/"]}}
    upstream: g
    plugins:
      - name: grpc_transcode
        config: {{descriptors: {desc}, services: [library.v1.Nope]}}
"""
    with pytest.raises(ConfigError) as ei:
        load_config_text(text)
    assert "library.v1.Nope" in str(ei.value)
