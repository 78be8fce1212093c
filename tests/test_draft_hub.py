"""Hub ids for the draft and the target, resolved at start-up the way SGLang resolves them.

A local folder laid out as a Hugging Face cache entry (refs/main -> snapshots/<commit>/)
stands in for the Hub; the child process runs SGLang's real argument pipeline with
HF_HUB_CACHE pointing there and HF_HUB_OFFLINE=1 (huggingface_hub reads both at import,
hence the separate process), so nothing touches the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"

CHILD = r"""
import json, sys
from sglang.srt.plugins import load_plugins
load_plugins()
from sglang.srt.arg_groups.overrides import resolved_view
from sglang.srt.server_args import prepare_server_args

for name, target, draft in json.loads(sys.argv[1]):
    args = ["--model-path", target, "--device", "cpu", "--speculative-algorithm", "EDSD",
            "--speculative-draft-model-path", draft]
    try:
        sa = prepare_server_args(args)
        sa.resolve_once()
        v = resolved_view(sa)
        out = {"ok": [v.speculative_num_steps, v.speculative_num_draft_tokens]}
    except Exception as e:
        out = {"error": f"{type(e).__name__}: {e}"}
    print("CASE " + json.dumps({name: out}), flush=True)

import contextlib, io
from sglang_edsd.cli import main
for name, target, draft in json.loads(sys.argv[1]):  # the same pairs through `sglang-edsd validate-draft`
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["validate-draft", "--draft", draft, "--target", target])
    out = {"code": code, "text": (stdout.getvalue() + stderr.getvalue()).strip()}
    print("CASE " + json.dumps({"cli-" + name: out}), flush=True)
"""


def _cache_entry(cache: Path, repo: str, files: dict[str, Path]) -> None:
    """models--org--name/{refs/main, snapshots/<commit>/...} with symlinked files, as the Hub client writes it."""
    entry = cache / ("models--" + repo.replace("/", "--"))
    snapshot = entry / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(COMMIT)
    for name, src in files.items():
        (snapshot / name).symlink_to(src)


@pytest.fixture(scope="module")
def hub_cases(smollm2: Path, smollm2_draft: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("hub")
    cache = root / "hub-cache"
    target_files = {p.name: p for p in smollm2.iterdir() if p.is_file()}
    _cache_entry(cache, "org/target", target_files)
    other = json.loads((smollm2 / "config.json").read_text())
    other["num_hidden_layers"] = 12
    (root / "other-config.json").write_text(json.dumps(other))
    _cache_entry(cache, "org/other-target", {**target_files, "config.json": root / "other-config.json"})
    draft_files = {p.name: p for p in smollm2_draft.iterdir() if p.is_file()}
    _cache_entry(cache, "org/edsd-draft", draft_files)
    _cache_entry(cache, "org/no-weights", {"config.json": smollm2_draft / "config.json"})
    cases = [
        ("hub-both", "org/target", "org/edsd-draft"),
        ("hub-draft-local-target", str(smollm2), "org/edsd-draft"),
        ("hub-target-wrong-depth", "org/other-target", "org/edsd-draft"),
        ("hub-target-local-draft-wrong-depth", "org/other-target", str(smollm2_draft)),
        ("hub-draft-no-weights", "org/target", "org/no-weights"),
    ]
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(root / "hf-home"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(cases)], capture_output=True, text=True, env=env, timeout=600
    )
    results: dict[str, dict] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("CASE "):
            results.update(json.loads(line[5:]))
    assert len(results) == 2 * len(cases), proc.stderr[-3000:]
    return results


@pytest.mark.long
def test_hub_ids_resolve_through_the_local_cache(hub_cases: dict[str, dict]) -> None:
    assert hub_cases["hub-both"] == {"ok": [4, 5]}
    assert hub_cases["hub-draft-local-target"] == {"ok": [4, 5]}


@pytest.mark.long
@pytest.mark.parametrize("case", ["hub-target-wrong-depth", "hub-target-local-draft-wrong-depth"])
def test_hub_target_is_checked_against_the_draft(hub_cases: dict[str, dict], case: str) -> None:
    error = hub_cases[case].get("error", "")
    assert "EDSD draft rejected: draft was built for another target: target num_hidden_layers is 12" in error


@pytest.mark.long
def test_hub_draft_without_weights_names_the_problem(hub_cases: dict[str, dict]) -> None:
    error = hub_cases["hub-draft-no-weights"].get("error", "")
    assert "EDSD draft rejected" in error and "no *.safetensors weights" in error, error


def test_local_target_folder_without_config_is_an_error(smollm2_draft: Path, tmp_path: Path) -> None:
    """`validate-draft --target` used to skip the compatibility check silently here."""
    from sglang_edsd.draft_config import DraftConfigError, validate_draft_folder

    with pytest.raises(DraftConfigError, match="target config not found"):
        validate_draft_folder(smollm2_draft, tmp_path)


@pytest.mark.long
def test_validate_draft_command_resolves_hub_ids_as_start_up_does(hub_cases: dict[str, dict]) -> None:
    """`sglang-edsd validate-draft` accepts what start-up accepts and rejects what it rejects."""
    for case in ("hub-both", "hub-draft-local-target"):
        assert hub_cases["cli-" + case]["code"] == 0 and hub_cases["cli-" + case]["text"].startswith("OK: "), case
    for case in ("hub-target-wrong-depth", "hub-target-local-draft-wrong-depth"):
        out = hub_cases["cli-" + case]
        assert out["code"] == 2 and "target num_hidden_layers is 12" in out["text"], out
    out = hub_cases["cli-hub-draft-no-weights"]
    assert out["code"] == 2 and "no *.safetensors weights" in out["text"], out
