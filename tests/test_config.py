from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from aiev.config import ConfigError, load_config


def test_defaults_fill_every_section():
    cfg = load_config(None)
    assert cfg["batches"]["batch_size"] == 50
    assert cfg["dedup"]["threshold"] == 0.7
    assert cfg["seeds"]["sources"][0]["type"] == "stdlib"
    assert cfg["sandbox"]["install"]["network"] is False
    assert cfg["decontam"]["threshold"] == 0.9


def test_embedded_default_and_paper_config_are_valid(repo):
    load_config(repo / "config.yaml")
    paper = load_config(repo / "config" / "paper.yaml")
    assert paper["batches"]["batch_size"] == 2000
    assert paper["split"]["test_fraction"] == 0.1
    assert paper["decontam"]["threshold"] == 0.9


def test_typo_in_key_names_the_key():
    with pytest.raises(ConfigError) as exc:
        load_config({"batches": {"batch_sizee": 10}})
    assert "batch_sizee" in str(exc.value)
    assert "'batches'" in str(exc.value)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError) as exc:
        load_config({"dedup": {"threshold": "high"}})
    assert "dedup.threshold" in str(exc.value)


def test_source_needs_its_fields():
    with pytest.raises(ConfigError) as exc:
        load_config({"seeds": {"sources": [{"name": "x", "type": "jsonl"}]}})
    assert "seeds.sources.0" in str(exc.value) and "path" in str(exc.value)


def test_inline_json_and_file(tmp_path):
    assert load_config('{"batches": {"batch_size": 7}}')["batches"]["batch_size"] == 7
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"batches": {"batch_size": 9}}))
    assert load_config(f)["batches"]["batch_size"] == 9
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_cli_rejects_typo_with_exit_2(tool_env, tmp_path):
    out = subprocess.run(
        [
            "aiev",
            "batches",
            "--config",
            '{"batches": {"bach_size": 3}}',
            "--input",
            "x",
            "--outdir",
            "y",
            "--report",
            "z",
        ],
        env=tool_env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "bach_size" in out.stderr


def test_snakefile_rejects_typo(tool_env, tmp_path, repo):
    bad = tmp_path / "bad.yaml"
    bad.write_text("batches:\n  batch_sizes: 3\n")
    out = subprocess.run(
        ["snakemake", "-s", str(repo / "Snakefile"), "-d", str(tmp_path), "--configfile", str(bad), "-n"],
        env=tool_env,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "batch_sizes" in out.stdout + out.stderr


def test_every_step_has_help(tool_env):
    from aiev.cli import STEPS as COMMANDS

    top = subprocess.run(["aiev", "--help"], env=tool_env, capture_output=True, text=True, check=True)
    for name in COMMANDS:
        assert name in top.stdout
        sub = subprocess.run(["aiev", name, "--help"], env=tool_env, capture_output=True, text=True)
        assert sub.returncode == 0 and "usage: aiev" in sub.stdout


def test_config_reference_doc_is_in_sync(repo):
    from aiev.config import reference_markdown

    assert (repo / "docs" / "config.md").read_text() == reference_markdown(), "run: aiev config --reference"


def test_paper_overlay_overrides_every_laptop_only_value(repo):
    """The slurm profile loads config/paper.yaml on top of config.yaml, merged the way Snakemake merges them."""
    from snakemake.utils import update_config

    merged = yaml.safe_load((repo / "config.yaml").read_text())
    update_config(merged, yaml.safe_load((repo / "config" / "paper.yaml").read_text()))
    cfg = load_config(merged)
    assert cfg["llm"]["teacher"]["serve"] is None and cfg["llm"]["teacher"]["model"] == "gpt-4-turbo"
    assert cfg["llm"]["teacher"]["mode"] == "chat" and cfg["llm"]["sampling"]["temperature"] == 0.0
    assert cfg["batches"]["batch_size"] == 2000 and cfg["batches"]["max_batches"] is None
    assert cfg["generate"]["max_rounds"] == 7 and cfg["llm"]["sampling"]["max_tokens"] == 2048
    assert [s["type"] for s in cfg["seeds"]["sources"]] == ["hf", "hf"]
    assert len(cfg["decontam"]["benchmarks"]) == 11
    t = cfg["train"]
    assert (t["nodes"], t["procs_per_node"], t["micro_batch_size"], t["gradient_accumulation_steps"]) == (10, 4, 8, 4)
    assert (t["max_seq_len"], t["max_steps"], t["epochs"], t["lr"], t["bf16"]) == (5120, None, 2, 5e-5, True)
    assert not t["base_model"].startswith("pypi:")


def test_floats_in_exponent_form_are_numbers(tmp_path):
    """YAML 1.2 floats (5e-5), as users write them and as json.dumps writes them for the rules' --config."""
    (tmp_path / "c.yaml").write_text("train:\n  lr: 5e-5\n  warmup_ratio: 1E-2\n")
    (tmp_path / "c.json").write_text(json.dumps({"train": {"lr": 5e-5}}))
    assert load_config(tmp_path / "c.yaml")["train"]["lr"] == 5e-5
    assert load_config(tmp_path / "c.yaml")["train"]["warmup_ratio"] == 0.01
    assert load_config(tmp_path / "c.json")["train"]["lr"] == 5e-5
