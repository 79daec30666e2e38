"""``lit-qwen3 curate`` through the real CLI: the smoke config's counts per filter against the
toy's known faults, resume, RL query selection, MLflow, configs, and errors on bad input."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from lit_qwen3.cli import main
from lit_qwen3.curation.data import read_jsonl
from lit_qwen3.curation.generators import generate_cached
from lit_qwen3.curation.toy import ToyProgram, ToyQueries
from lit_qwen3.curation.verdict import EmptyResultError
from lit_qwen3.datamodules.conversations import read_conversations
from tests.single_thread import one_thread  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs/toy/curate_smoke.yaml"
CURATE_CONFIGS = [
    p
    for p in sorted((REPO / "configs").rglob("*.yaml"))
    if "lit-qwen3 curate" in "".join(p.read_text().splitlines()[:3])
]
RESPONSE_FILTERS = [
    "wrong_answer",
    "repetition",
    "guess",
    "think_answer_mismatch",
    "language_mix",
    "near_duplicate",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, str]:
    """One MLflow store for the module (creating a sqlite store takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return {"uri": f"sqlite:///{root}/mlflow.db", "artifacts": str(root / "artifacts")}


def curate(*args: str, out: Path, store: dict[str, str], config: Path = SMOKE) -> dict:
    main(
        [
            "curate",
            "--config",
            str(config),
            "--output_dir",
            str(out),
            "--progress",
            "false",
            "--mlflow.tracking_uri",
            store["uri"],
            "--mlflow.artifact_location",
            store["artifacts"],
            *args,
        ]
    )
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, store) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("smoke") / "curation"
    return out, curate(out=out, store=store)


def test_curate_configs_parse_and_open_with_their_command(capsys):
    assert {p.name for p in CURATE_CONFIGS} >= {"curate.yaml", "curate_smoke.yaml"}
    for config in CURATE_CONFIGS:
        first_lines = config.read_text().splitlines()[:3]
        assert any(f"--config {config.relative_to(REPO).as_posix()}" in x for x in first_lines)
        with pytest.raises(SystemExit) as exit_info:
            main(["curate", "--config", str(config), "--print_config"])
        assert exit_info.value.code == 0
        resolved = yaml.safe_load(capsys.readouterr().out)
        steps = yaml.safe_load(config.read_text())["steps"]
        assert resolved["steps"] == steps
        if "toy" in config.parts:
            assert resolved["steps"] == ["queries", "responses", "cold_start"]
            assert resolved["mlflow"]["tracking_uri"] == "sqlite:///runs/toy/mlflow.db"
        else:  # a real-size run records into its model size's store, not the toy one
            assert resolved["mlflow"]["tracking_uri"].startswith("sqlite:///runs/qwen3-")


def test_smoke_manifest_counts_every_filter_against_the_known_faults(smoke):
    out, manifest = smoke
    responses = manifest["steps"]["responses"]["filters"]
    assert list(responses) == ["pass_at_n", *RESPONSE_FILTERS]
    # Ground truth: the fault toy-program injected in each candidate, and the near-copies of
    # validation questions in the query pool. Every fault is removed by its own filter, and
    # no clean candidate is removed.
    candidates = read_jsonl(out / "work/responses/candidates.jsonl")
    queries = {row["id"]: row for row in read_jsonl(out / "queries.jsonl")}
    rejected = {
        (r["id"], r["index"]): r["filter"]
        for r in read_jsonl(out / "work/responses/rejected.jsonl")
    }
    expected = Counter()
    for c in candidates:
        near_copy = queries[c["id"]]["toy_fault"] == "near_copy"
        truth = c["toy_fault"] or ("near_duplicate" if near_copy else None)
        assert rejected.get((c["id"], c["index"])) == truth, c
        expected[truth] += 1
    for name in RESPONSE_FILTERS:
        assert responses[name]["removed"] == expected[name] > 0, name
    assert manifest["counts"]["responses/repetition/removed"] == expected["repetition"]
    kept = responses["near_duplicate"]["out"]
    assert kept == expected[None] == manifest["outputs"]["responses"]["rows"]


def test_smoke_query_filters_match_the_toy_pool(smoke):
    out, manifest = smoke
    filters = manifest["steps"]["queries"]["filters"]
    toy = ToyQueries(
        size=64,
        validation_size=16,
        near_copy_rate=0.08,
        multi_question_rate=0.05,
        open_ended_rate=0.05,
    )
    rows = toy.rows()
    faults = Counter(row["toy_fault"] for row in rows)
    assert (
        filters["validation_split"]["reserved"] == 16 and filters["validation_split"]["out"] == 64
    )
    assert filters["multiple_questions"]["removed"] == faults["multi_question"] == 3
    assert filters["open_ended"]["removed"] == faults["open_ended"] == 3

    # toy-program answers one-column problems without thinking, and estimates the rest from
    # leading digits: right only when the operands are a digit followed by zeros.
    def round_number(n: int) -> bool:
        return str(n)[1:].strip("0") == ""

    solved = []
    for r in rows[16:]:
        a, b = re.search(r"(\d+)\s*[+*]\s*(\d+)", r["messages"][0]["content"]).groups()
        plain = r["toy_fault"] in (None, "near_copy")
        if plain and (r["difficulty"] == 1 or (round_number(int(a)) and round_number(int(b)))):
            solved.append(r)
    assert filters["solved_without_thinking"]["removed"] == len(solved) > 0
    balance = filters["domain_balance"]
    assert balance["domains"] == {"addition": 36, "multiplication": 12}  # 3:1, as configured
    assert manifest["steps"]["cold_start"]["filters"]["cold_start_subset"]["out"] == 32


def test_smoke_outputs_are_what_the_datamodules_read(smoke):
    out, manifest = smoke
    cold_start = read_conversations(out / "cold_start.jsonl")
    assert len(cold_start) == 32
    assert Counter(r["domain"] for r in cold_start) == {"addition": 24, "multiplication": 8}
    for row in cold_start:
        user, reply = row["messages"]
        assert user["content"].endswith(" /think")
        assert reply["reasoning_content"] and reply["content"] == f"\\boxed{{{row['answer']}}}"
    validation = read_jsonl(out / "validation.jsonl")
    queries = read_jsonl(out / "queries.jsonl")
    assert {r["split"] for r in validation} == {"val"}
    assert not {r["id"] for r in validation} & {r["id"] for r in queries}
    assert all(set(r) >= {"id", "messages", "answer", "domain"} for r in queries)
    assert manifest["models"] == {
        "judge": None,
        "no_think": "toy-program",
        "teacher": "toy-program",
    }
    assert manifest["seeds"]["seed"] == 0


def test_smoke_run_is_recorded_in_mlflow(smoke, store):
    from mlflow.tracking import MlflowClient

    _, manifest = smoke
    client = MlflowClient(tracking_uri=store["uri"])
    run = client.get_run(manifest["mlflow_runs"][0]["run_id"])
    assert run.data.tags["stage"] == "curation"
    assert run.data.tags["steps"] == "queries,responses,cold_start"
    assert run.data.metrics["cold_start/seconds"] == manifest["counts"]["cold_start/seconds"]
    assert not [k for k in run.data.metrics if k.endswith(("/in", "/out", "/removed"))]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"manifest.json", "config.yaml", "curation", "figures"}
    funnel = json.loads(
        Path(client.download_artifacts(run.info.run_id, "curation/funnel.json")).read_text()
    )  # the funnel: one table, one row per filter
    rows = {(r[0], r[1]): dict(zip(funnel["columns"], r, strict=True)) for r in funnel["data"]}
    for key in ("responses/language_mix/removed", "queries/open_ended/in"):
        step, name, column = key.split("/")
        assert rows[(step, name)][column] == manifest["counts"][key], key


def test_resume_skips_finished_steps_then_rl_queries_selects_learnable_ones(smoke, store, capsys):
    out, first = smoke
    stamp = (out / "cold_start.jsonl").stat().st_mtime_ns
    again = curate("--resume", out=out, store=store)
    assert "step responses already done" in capsys.readouterr().out
    assert (out / "cold_start.jsonl").stat().st_mtime_ns == stamp
    assert again["steps"]["responses"]["finished"] == first["steps"]["responses"]["finished"]
    with pytest.raises(ValueError, match="step 'responses' finished in .* with other settings"):
        curate("--resume", "--responses.samples", "3", out=out, store=store)

    manifest = curate(
        "--steps", "[rl_queries]", "--rl_queries.policy", "toy-program", out=out, store=store
    )
    rl = read_jsonl(out / "rl_queries.jsonl")
    cold_start_ids = {r["query_id"] for r in read_jsonl(out / "cold_start.jsonl")}
    filters = manifest["steps"]["rl_queries"]["filters"]
    assert filters["used_in_cold_start"]["removed"] == len(cold_start_ids)
    assert rl and all(0 < r["pass_rate"] < 1 and r["mode"] == "think" for r in rl)
    assert [r["pass_rate"] for r in rl] == sorted(r["pass_rate"] for r in rl)  # hardest first
    assert not {r["id"] for r in rl} & cold_start_ids
    assert filters["unlearnable_solved"]["removed"] > 0
    assert "responses" in manifest["steps"]  # earlier steps stay recorded


def test_rl_queries_with_a_model_that_solves_nothing_is_an_error(smoke, store, tmp_path):
    from lit_qwen3.models import save_toy_checkpoint

    out, _ = smoke
    policy = str(save_toy_checkpoint(tmp_path / "policy", preset="toy-student"))
    args = ["--rl_queries.samples", "2", "--rl_queries.sampling.max_new_tokens", "8"]
    with pytest.raises(EmptyResultError, match="'unlearnable_unsolved' removed all 16 queries"):
        curate(
            "--steps", "[rl_queries]", "--rl_queries.policy", policy, *args, out=out, store=store
        )
    samples = read_jsonl(out / "work/rl_queries/policy_samples.jsonl")
    assert len(samples) == 32 and {s["index"] for s in samples} == {0, 1}


def test_generation_resumes_at_the_first_unfinished_batch(tmp_path):
    class Counting(ToyProgram):
        calls = 0

        def generate(self, queries, indices, *, thinking, seed):
            Counting.calls += 1
            return super().generate(queries, indices, thinking=thinking, seed=seed)

    queries = [
        {"id": f"q{i}", "messages": [{"role": "user", "content": f"{i}+19"}]} for i in range(5)
    ]
    cache = tmp_path / "cache.jsonl"
    kwargs = dict(thinking=True, batch_size=4, seed=0, cache=cache, progress=False)
    whole = generate_cached(Counting(), queries, 2, resume=False, **kwargs)
    assert Counting.calls == 3  # 10 rows in batches of 4
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:4]) + "\n" + lines[4][:10])  # killed mid-write
    Counting.calls = 0
    resumed = generate_cached(Counting(), queries, 2, resume=True, **kwargs)
    assert Counting.calls == 2 and resumed == whole


def test_pipeline_curate_stages_nest_in_mlflow_and_feed_each_other(tmp_path, store):
    """The pipeline gives each stage its own folder: the rl_queries call reads the first
    call's outputs through input_dir, and both runs nest under the pipeline's parent run."""
    from mlflow.tracking import MlflowClient

    from lit_qwen3.recipe.pipeline import Pipeline, PipelineConfig, StageSpec

    rl = {"steps": ["rl_queries"], "input_dir": "{curation}", "rl_queries.policy": "toy-program"}
    stages = [
        StageSpec("curation", str(SMOKE), command="curate", output="."),
        StageSpec("rl_curation", str(SMOKE), command="curate", output=".", set=rl),
    ]
    config = PipelineConfig(root=str(tmp_path / "pipe"), tracking_uri=store["uri"], stages=stages)
    pipeline = Pipeline(config)
    for spec in stages:
        path = tmp_path / f"{spec.name}.yaml"
        path.write_text(yaml.safe_dump(pipeline.stage_config(spec)))
        main(["curate", "--config", str(path), "--progress", "false"])
    first = tmp_path / "pipe/curation"
    second = json.loads((tmp_path / "pipe/rl_curation/manifest.json").read_text())
    assert list(second["steps"]) == ["rl_queries"]
    assert second["steps"]["rl_queries"]["inputs"] == {
        "queries": str(first.resolve()),
        "cold_start": str(first.resolve()),
    }
    used = {r["query_id"] for r in read_jsonl(first / "cold_start.jsonl")}
    rl_rows = read_jsonl(tmp_path / "pipe/rl_curation/rl_queries.jsonl")
    assert rl_rows and not used & {r["id"] for r in rl_rows}
    client = MlflowClient(tracking_uri=store["uri"])
    run = client.get_run(second["mlflow_runs"][0]["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == pipeline.parent_id
    assert run.data.tags["stage"] == "rl_queries" and run.info.run_name == "rl_curation"


# -- bad input -----------------------------------------------------------------------------------


def write_queries(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def own_data(tmp_path: Path, rows: list[dict], store, *args: str) -> dict:
    data = write_queries(tmp_path / "queries.jsonl", rows)
    return curate(
        "--queries.source",
        str(data),
        "--queries.validation_size",
        "1",
        "--cold_start.size",
        "2",
        "--queries.domains.shares",
        "{addition: 1.0}",
        "--queries.domains.rules",
        "{addition: '\\+'}",
        *args,
        out=tmp_path / "out",
        store=store,
    )


def row(question: str, answer: str | None = None, **extra) -> dict:
    out = {"messages": [{"role": "user", "content": question}], **extra}
    if answer is not None:
        out["answer"] = answer
    return out


def test_own_data_runs_and_a_query_without_verifier_spec_is_an_error(tmp_path, store):
    rows = [row(f"{a}+{a + 50}", str(2 * a + 50)) for a in range(10, 20)]
    manifest = own_data(tmp_path, rows, store)
    assert manifest["steps"]["queries"]["filters"]["validation_split"]["reserved"] == 1
    assert manifest["outputs"]["cold_start"]["rows"] == 2
    rows[3] = row("12+13")  # no answer, no reward: nothing to verify against
    with pytest.raises(ValueError, match=r"queries.jsonl:4: no verifier spec: reward 'arithmetic'"):
        own_data(tmp_path, rows, store)
    rows[3] = row("12+13", "25", reward={"names": ["math"]})
    with pytest.raises(ValueError, match=r"queries.jsonl:4: reward.names \['math'\] are not"):
        own_data(tmp_path, rows, store)


def test_unknown_domain_names_are_errors(tmp_path, store):
    rows = [row(f"{a}+{a + 50}", str(2 * a + 50), domain="addition") for a in range(10, 20)]
    rows[5]["domain"] = "geometry"
    with pytest.raises(ValueError, match=r"queries.jsonl:6: unknown domain 'geometry'"):
        own_data(tmp_path, rows, store)
    with pytest.raises(ValueError, match=r"unknown domain name\(s\) \['algebra'\] in \['rules'\]"):
        own_data(tmp_path, rows, store, "--queries.domains.rules", '{"algebra": "x"}')


def test_a_filter_that_removes_everything_is_named(tmp_path, store):
    rows = [row(f"Explain why {a}+{a + 50} needs a carry.", str(2 * a + 50)) for a in range(10, 14)]
    with pytest.raises(EmptyResultError, match="filter 'open_ended' removed all 3 queries it saw"):
        own_data(tmp_path, rows, store)
    rejected = read_jsonl(tmp_path / "out/work/queries/rejected.jsonl")  # saved before the error
    assert [r["reason"] for r in rejected] == ["open-ended request: 'explain why'"] * 3


def test_hf_models_as_judge_no_think_model_and_teacher(tmp_path, store):
    """A random-init tiny model: the judge's replies are unparseable (queries kept, domains from
    the default), it never answers correctly without thinking (nothing removed), and as a
    teacher it solves nothing, so pass@N > 0 removes every query: an error naming the filter."""
    from lit_qwen3.models import save_toy_checkpoint

    model = str(save_toy_checkpoint(tmp_path / "tiny", preset="toy-student"))
    rows = [row(f"{a}+{a + 50}", str(2 * a + 50)) for a in range(10, 16)]
    args = [
        "--queries.judge.model", model,
        "--queries.judge.max_new_tokens", "4",
        "--queries.solved_without_thinking.model", model,
        "--queries.solved_without_thinking.samples", "2",
        "--queries.solved_without_thinking.max_new_tokens", "6",
        "--queries.domains.rules", "{}",
        "--queries.domains.default", "addition",
        "--queries.domains.shares", "{addition: 1.0}",
        "--responses.teacher", model,
        "--responses.samples", "2",
        "--responses.sampling.max_new_tokens", "8",
    ]  # fmt: skip
    with pytest.raises(EmptyResultError, match="filter 'pass_at_n' removed all 5 queries it saw"):
        own_data(tmp_path, rows, store, *args)
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    filters = manifest["steps"]["queries"]["filters"]
    assert filters["judge_not_verifiable"]["removed"] == 0
    assert filters["solved_without_thinking"]["removed"] == 0
    assert manifest["models"] == {"judge": model, "no_think": model}
    replies = read_jsonl(tmp_path / "out/work/queries/judge_verifiable.jsonl")
    assert len(replies) == 5 and all(isinstance(r["completion"], str) for r in replies)
    assert len(read_jsonl(tmp_path / "out/work/queries/judge_domain.jsonl")) == 5
    assert len(read_jsonl(tmp_path / "out/work/responses/candidates.jsonl")) == 10
