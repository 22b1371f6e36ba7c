"""``sincere keys create|list|revoke`` and ``sincere seal keygen``: tokens once, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import sincere.cli.keys
import sincere.cli.seal  # noqa: F401  (both register their sub-apps)
from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.serve.security.envelope import load_keypair, load_public_key
from sincere.serve.security.keystore import KeyStore

runner = CliRunner()


def test_create_prints_token_once_then_list_and_revoke(tmp_path: Path) -> None:
    """create prints a working token; list shows the key without it; revoke marks it revoked."""
    store = tmp_path / "keys.db"
    created = runner.invoke(
        app,
        ["keys", "create", "--name", "acme", "--model", "llama-3-8b", "--rpm", "60",
         "--budget-usd", "5", "--expires-in-days", "30", "--store", str(store), "--json"],
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    token = json.loads(created.stdout)["token"]
    assert KeyStore.open(store).authenticate(token) is not None
    listed = runner.invoke(app, ["keys", "list", "--store", str(store), "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert (row["name"], row["state"], row["rpm"], row["budget_usd"]) == ("acme", "active", 60, 5.0)
    assert token not in listed.output and token.rpartition(".")[2] not in listed.output
    revoked = runner.invoke(app, ["keys", "revoke", row["key_id"], "--store", str(store)])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    again = json.loads(runner.invoke(app, ["keys", "list", "--store", str(store), "--json"]).stdout)
    assert again[0]["state"] == "revoked"
    audit = (tmp_path / "keys.db.audit.jsonl").read_text()
    assert audit.count('"action": "key.') == 2 and token not in audit


def test_store_from_environment_and_table(tmp_path: Path) -> None:
    """SINCERE_KEYS names the store; the table lists admin and client keys."""
    env = {"SINCERE_KEYS": str(tmp_path / "keys.json"), "COLUMNS": "200"}
    assert (
        runner.invoke(app, ["keys", "create", "--admin", "--name", "ops"], env=env).exit_code == 0
    )
    table = runner.invoke(app, ["keys", "list"], env=env)
    assert table.exit_code == 0 and "admin" in table.output and "ops" in table.output


def test_bad_input_is_a_one_line_error(tmp_path: Path) -> None:
    """Unknown ids, admin keys with budgets, bad dates and missing stores fail clearly."""
    store = str(tmp_path / "keys.db")
    cases = [
        (["keys", "revoke", "feedfeedfeed", "--store", store], "no key with this id"),
        (["keys", "create", "--admin", "--name", "o", "--budget-usd", "1", "--store", store],
         "admin key has no tenant limits"),
        (["keys", "create", "--name", "a", "--expires-at", "soon", "--store", store],
         "--expires-at: bad date; got 'soon'"),
        (["keys", "list", "--store", str(tmp_path / "none.db")], "key store not found"),
    ]  # fmt: skip
    runner.invoke(app, ["keys", "create", "--name", "first", "--store", store])
    for args, message in cases:
        result = runner.invoke(app, args)
        assert isinstance(result.exception, ConfigError), (args, result.output)
        assert message in str(result.exception)


def test_seal_keygen_writes_pair_and_pin_and_never_overwrites(tmp_path: Path) -> None:
    """keygen writes a private pair file and a public pin that match; a second run refuses."""
    args = ["seal", "keygen", "--out", str(tmp_path / "s.key"), "--public", str(tmp_path / "s.pub")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    pair = load_keypair(tmp_path / "s.key")
    assert load_public_key(tmp_path / "s.pub") == pair.pinned
    assert pair.key_id in result.stdout
    second = runner.invoke(app, args)
    assert isinstance(second.exception, ConfigError) and "file exists" in str(second.exception)


def test_seal_serve_checks_its_arguments_before_binding(tmp_path: Path) -> None:
    """A bad upstream URL or half a TLS pair is refused before anything starts."""
    key = tmp_path / "s.key"
    runner.invoke(app, ["seal", "keygen", "--out", str(key), "--public", str(tmp_path / "p")])
    bad_url = runner.invoke(app, ["seal", "serve", "--upstream", "ftp://x", "--key", str(key)])
    assert isinstance(bad_url.exception, ConfigError)
    assert "--upstream: bad URL; got 'ftp://x'" in str(bad_url.exception)
    half = ["seal", "serve", "--upstream", "http://127.0.0.1:1", "--tls-cert", str(key)]
    result = runner.invoke(app, [*half, "--key", str(key)])
    assert isinstance(result.exception, ConfigError) and "both --tls-cert" in str(result.exception)


def test_serve_refuses_an_open_address_without_keys(tmp_path: Path) -> None:
    """`sincere serve --host 0.0.0.0` without --keys stops before binding, naming the flag."""
    import sincere.cli.serve  # noqa: F401  (registers the verb)

    config = tmp_path / "gateway.yaml"
    config.write_text("backends: []\n")
    result = runner.invoke(app, ["serve", str(config), "--host", "0.0.0.0"])
    assert isinstance(result.exception, ConfigError)
    message = str(result.exception)
    assert "--insecure-no-auth" in message and "--keys" in message and "\n" not in message
    half = runner.invoke(app, ["serve", str(config), "--tls-cert", str(config)])
    assert isinstance(half.exception, ConfigError) and "go together" in str(half.exception)


def test_create_refuses_a_tier_the_gateway_does_not_serve(tmp_path: Path) -> None:
    """`--tier gold` is refused naming the tiers allowed: the gateway config's with --config,
    else the one a config without tiers serves; a served tier is accepted."""
    store, config = tmp_path / "keys.db", tmp_path / "gateway.yaml"
    config.write_text(
        "tiers:\n  interactive: {ttft_s: 1.0}\n  batch: {ttlt_s: 600}\ndefault_tier: batch\n"
    )
    base = ["keys", "create", "--name", "acme", "--store", str(store)]
    plain = runner.invoke(app, [*base, "--tier", "gold"])
    assert isinstance(plain.exception, ConfigError)
    assert "--tier" in str(plain.exception) and "allowed: default" in str(plain.exception)
    assert "--config" in str(plain.exception)
    given = runner.invoke(app, [*base, "--tier", "gold", "--config", str(config)])
    assert isinstance(given.exception, ConfigError)
    assert "got 'gold'; allowed: batch, interactive" in str(given.exception)
    assert not store.exists() or KeyStore.open(store).records() == []
    ok = runner.invoke(app, [*base, "--tier", "batch", "--config", str(config), "--json"])
    assert ok.exit_code == 0, ok.output


def test_create_metrics_key(tmp_path: Path) -> None:
    """``keys create --metrics`` makes a metrics key; with --admin too, or with a limit, it is
    a one-line error."""
    store = str(tmp_path / "keys.db")
    created = runner.invoke(
        app, ["keys", "create", "--metrics", "--name", "prom", "--store", store, "--json"]
    )
    assert created.exit_code == 0, created.output
    made = json.loads(created.stdout)
    assert made["kind"] == "metrics" and made["token"].startswith("sk-snc-metrics-")
    for extra, message in (
        (["--admin"], "a key is of one kind"),
        (["--rpm", "5"], "metrics key has no tenant limits"),
    ):
        result = runner.invoke(
            app, ["keys", "create", "--metrics", "--name", "p", "--store", store, *extra]
        )
        assert isinstance(result.exception, ConfigError) and message in str(result.exception)
