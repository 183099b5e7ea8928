"""Per-node tokens: clear and hashed, one node per token, and the tokens_file format."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from httpkit import WATTLEDGER, batch, body, client, make_app

from wattledger.collector.ingest.auth import TokenBook, hash_line, new_token, parse_tokens_file, token_digest
from wattledger.collector.settings import settings_from
from wattledger.config import ConfigError


def test_clear_and_hashed_tokens_identify_their_node() -> None:
    book = TokenBook({"n1": "alpha"}, parse_tokens_file(hash_line("n2", "beta") + "\n"))
    assert book.identify("Bearer alpha").node == "n1"
    assert book.identify("bearer beta").node == "n2"  # the scheme is case-insensitive
    assert book.identify("Bearer gamma").status == 401
    assert book.identify(None).status == 401
    assert book.identify("alpha").status == 401  # no scheme


def test_a_token_is_valid_for_its_own_node_only() -> None:
    assert TokenBook.check_node_name("n1", "n1") == (0, "")
    status, reason = TokenBook.check_node_name("n1", "n2")
    assert status == 403 and "n2" in reason
    assert TokenBook.check_node_name(None, "n2") == (0, "")  # unauthenticated, when allowed


def test_unauthenticated_pushes_only_when_allowed() -> None:
    assert TokenBook({}).identify(None).status == 401
    allowed = TokenBook({"n1": "alpha"}, allow_unauthenticated=True)
    assert allowed.identify(None).status == 0 and allowed.identify(None).node is None
    assert allowed.identify("Bearer wrong").status == 401  # a wrong token is still wrong
    assert allowed.identify("Bearer alpha").node == "n1"


def test_two_nodes_cannot_share_a_token() -> None:
    with pytest.raises(ValueError, match="share one token"):
        TokenBook({"n1": "same", "n2": "same"})
    with pytest.raises(ValueError, match="one token in tokens and another in tokens_file"):
        TokenBook({"n1": "a"}, {"n1": token_digest("b")})


def test_tokens_file_format() -> None:
    upper_hex = "GPU-02:sha256:" + token_digest("y").hex().upper()
    text = f"# fleet tokens\n\n{hash_line('gpu-01', 'x')}\n  {upper_hex}  \n"
    parsed = parse_tokens_file(text)
    assert parsed == {"gpu-01": token_digest("x"), "GPU-02": token_digest("y")}


@pytest.mark.parametrize(("text", "match"), [
    ("gpu-01:s3cret\n", "line 1 is not NODE:sha256:HEX"),
    ("gpu-01:sha256:abc\n", "line 1 is not"),
    (f"{hash_line('a', 'x')}\n{hash_line('a', 'y')}\n", "line 2: node 'a' appears twice"),
    ("bad..name!:sha256:" + "0" * 64, "line 1: 'bad..name!' is not a valid node name"),
])
def test_bad_tokens_file_lines(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as caught:
        parse_tokens_file(text)
    assert "s3cret" not in str(caught.value)  # a secret pasted by mistake is not echoed


def test_bad_tokens_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("gpu-01:not-hashed\n")
    with pytest.raises(ConfigError, match=r"^config key tokens_file: tokens_file .* line 1 is not"):
        settings_from({"tokens_file": str(path)})


def test_new_tokens_are_random_and_long() -> None:
    a, b = new_token(), new_token()
    assert a != b and len(a) >= 43


def test_hash_token_command_reads_stdin() -> None:
    r = subprocess.run([WATTLEDGER, "collector", "--hash-token", "gpu-01"], input="s3cret\n",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    lines = [line for line in r.stdout.splitlines() if not line.startswith("#")]
    assert lines == [hash_line("gpu-01", "s3cret")]


@pytest.mark.anyio
async def test_hashed_token_pushes_over_http(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(hash_line("gpu-node-01", "from-file") + "\n")
    app, ledger = make_app(tokens={}, tokens_file=str(path))
    headers = {"Authorization": "Bearer from-file", "Content-Type": "application/json"}
    async with client(app) as c:
        ok = await c.post("/v1/batches", content=body(batch()), headers=headers)
        other = await c.post("/v1/batches", content=body(batch(node="gpu-node-02")), headers=headers)
    assert ok.status_code == 200 and other.status_code == 403
    assert ledger.readings == {"gpu-node-01": 4}


@pytest.mark.anyio
async def test_allow_unauthenticated_accepts_pushes_without_a_token() -> None:
    app, ledger = make_app(tokens={}, allow_unauthenticated=True)
    async with client(app) as c:
        r = await c.post("/v1/batches", content=body(batch(node="anything")),
                         headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    assert ledger.readings == {"anything": 4}


PRESENT_AND_WRONG = ["Basic dG9rLW9uZQ==", "garbage", "", "Bearer ", "Bearer unknown-token", "Token alpha",
                     "alpha"]


@pytest.mark.parametrize("authorization", PRESENT_AND_WRONG)
@pytest.mark.parametrize("allow_unauthenticated", [False, True], ids=["tokens-only", "allow-unauthenticated"])
def test_a_present_and_wrong_credential_is_401_in_every_mode(authorization: str,
                                                            allow_unauthenticated: bool) -> None:
    book = TokenBook({"n1": "alpha"}, allow_unauthenticated=allow_unauthenticated)
    identity = book.identify(authorization)
    assert identity.status == 401 and identity.node is None and identity.reason


@pytest.mark.anyio
@pytest.mark.parametrize("authorization", PRESENT_AND_WRONG)
async def test_allow_unauthenticated_still_refuses_a_wrong_credential_over_http(authorization: str) -> None:
    app, ledger = make_app(allow_unauthenticated=True)
    async with client(app) as c:
        wrong = await c.post("/v1/batches", content=body(batch()),
                             headers={"Content-Type": "application/json", "Authorization": authorization})
        absent = await c.post("/v1/batches", content=body(batch(seq=2)),
                              headers={"Content-Type": "application/json"})
    assert wrong.status_code == 401, wrong.text
    assert wrong.headers["content-type"] == "application/json"
    assert wrong.json()["error"] == "unauthorized"
    assert wrong.json()["detail"]["field"] == "Authorization"
    assert absent.status_code == 200  # absent is what allow_unauthenticated accepts
    assert ledger.committed == {("s-1", 2): 4}
