"""Issue 26: live trading on margin, swap or futures is refused at start-up with the setting named (reconciliation
reads spot balances, so a short could not be checked against the venue); paper may short on any market type."""

from __future__ import annotations

import pytest
import yaml

from morningstar_trader.cli import main
from morningstar_trader.config import Settings, load_secrets
from morningstar_trader.cycle import CycleError, build_context

KEYS = load_secrets({"MORNINGSTAR_EXCHANGE_API_KEY": "k", "MORNINGSTAR_EXCHANGE_SECRET": "s"})


@pytest.mark.parametrize("market", ["margin", "swap", "future"])
def test_a_live_start_up_on_a_market_with_shorts_is_refused_naming_the_setting(market, tmp_path):
    settings = Settings(
        mode="live",
        exchange={"market_type": market, "api_url": "http://127.0.0.1:9"},  # never reached: refused first
        paths={"state_dir": tmp_path / "state", "models_dir": tmp_path / "models", "logs_dir": tmp_path / "logs"},
    )
    with pytest.raises(CycleError, match=f"exchange.market_type '{market}' is refused in live mode") as e:
        build_context(settings, KEYS, run_id="t", confirm_live=True, allow_unproven_model=True)
    assert "exchange.market_type: spot" in str(e.value)  # what to do instead
    assert not (tmp_path / "state").exists()  # refused before any store was opened or order could go out


@pytest.mark.parametrize("command", ["run", "schedule"])
def test_the_cli_refuses_live_on_margin_before_any_notebook_starts(command, tmp_path, monkeypatch, capsys):
    "`run` and `schedule` refuse it in one error line, before the model gate, a lock or a run notebook."
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"exchange": {"market_type": "margin", "api_url": "http://127.0.0.1:9"}}))
    monkeypatch.chdir(tmp_path)
    argv = [command, "--mode", "live", "--i-understand-this-trades-real-money", "--config", str(config)]
    assert main([*argv, *(["--max-runs", "1"] if command == "schedule" else [])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("morningstar: error: exchange.market_type 'margin' is refused in live mode"), err
    assert err.count("\n") == 1 and not list(tmp_path.rglob("*.ipynb")) and not (tmp_path / "runs").exists()
