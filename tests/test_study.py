from pathlib import Path

import pytest

from orchestrator.execution.selection import SearchRecord, select_best
from orchestrator.spec.plan import format_plan, make_plan
from orchestrator.spec.space import SearchSpace
from orchestrator.spec.study import StudyError, load_study
from provpt_core import TrainConfig

REPO = Path(__file__).resolve().parents[1]
MICRO = (REPO / "tests" / "studies" / "micro.yaml").read_text()
LINEAR_TRIAL = "    trial: {train: {head_lr: null}}"


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (("name: micro", "name: micro\nwhatever: 1"), "whatever: unknown field"),
        (("tasks: [mini_count, mini_loc]", "tasks: [mini_count, dtdd]"), "tasks[1]: unknown task 'dtdd'; did you mean dtd"),
        (("  - name: linear", "  - name: prefix_tuning"), "methods[0].name: unknown method 'prefix_tuning'"),
        (("train.lr: {low: 0.05, high: 0.5, log: true}\n  - name: provpt",
          "train.lr: {low: 0.5, high: 0.05}\n  - name: provpt"), "methods[0].search.train.lr: low 0.5 > high 0.05"),
        (("train: {epochs: 2, batch_size: 100, head_lr: 0.1}", "train: {epochs: 0, lr: -0.1}"),
         "methods[0] (linear): train.epochs: expected an integer >= 1, got 0"),
        (("train.lr: {low: 0.05, high: 0.5, log: true}\n  - name: provpt",
          "train.lrr: {low: 0.05, high: 0.5}\n  - name: provpt"), "methods[0] (linear): train.lrr: unknown field"),
        (("config: {num_prompts: 1}", "config: {num_promts: 1}"), "method.num_promts: unknown field"),
        (("resources: {cpu: 1}", "resources: {cpu: 0}"), "resources: cpu: expected a number > 0"),
        (("final: {seeds: [0, 1]}", "final: {seeds: []}"), "final.seeds: List should have at least 1 item"),
        (("{low: 2, high: 4, when", "{low: 2, high: 4, step: 1, when"), None),
        (("data: {cache_dir: \"${PROVPT_CACHE}\"}", "data: {cache_dir: \"${PROVPT_NOT_SET_ANYWHERE}\"}"),
         "data.cache_dir: environment variable PROVPT_NOT_SET_ANYWHERE is not set"),
        (("name: micro", "name: micro\ntasks: [a"), "not valid YAML"),
        ((LINEAR_TRIAL, "    trial: {train: {head_lr: null, optimizr: adamw}}"),
         "methods[0] (linear): train.optimizr: unknown field"),
    ],
)
def test_bad_study_files_name_the_file_and_the_field(tmp_path, monkeypatch, change, message):
    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path))
    old, new = change
    assert old in MICRO
    path = _write(tmp_path, MICRO.replace(old, new, 1))
    if message is None:
        load_study(path)
        return
    with pytest.raises(StudyError) as caught:
        load_study(path)
    assert str(caught.value).startswith(f"{path}")
    assert message in str(caught.value)


def test_env_interpolation_with_default(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVPT_CACHE", "/data/cache")
    study = load_study(_write(tmp_path, MICRO.replace("name: micro", "name: ${STUDY_NAME:-micro2}")))
    assert study.name == "micro2" and study.data.cache_dir == "/data/cache"


def test_plan_and_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path))
    study = load_study(_write(tmp_path, MICRO))
    pipelines = make_plan(study)
    assert [p.key for p in pipelines] == ["mini_count/linear", "mini_count/provpt", "mini_loc/linear", "mini_loc/provpt"]
    assert pipelines[1].base.data.task == "mini_count" and pipelines[1].base.method.num_prompts == 1 and pipelines[1].base.train.epochs == 2
    text = format_plan(study, pipelines, "/out", "sqlite:////out/mlflow.db")
    assert "4 pipelines (2 tasks x 2 methods)" in text
    assert text.splitlines()[-2].split()[:3] == ["total", "8", "8"]


def test_a_method_overrides_the_trial_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path))
    text = MICRO.replace(LINEAR_TRIAL, "    trial: {train: {head_lr: null, optimizer: adamw, lr: 0.001}}", 1)
    study = load_study(_write(tmp_path, text))
    linear, provpt = study.methods
    task = study.task_specs[0]
    mine, other = study.trial_config(linear, task).train, study.trial_config(provpt, task).train
    assert (mine.epochs, mine.batch_size, mine.head_lr, mine.optimizer, mine.lr) == (2, 100, None, "adamw", 0.001)
    assert (other.epochs, other.batch_size, other.head_lr, other.optimizer, other.lr) == (2, 100, 0.1, "sgd", TrainConfig().lr)


def test_published_recipes_over_the_study_trial_under_the_method_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path))
    # the study's trial sets nothing a recipe sets otherwise (that is refused: test_bad_input)
    published = MICRO.replace("methods:", "recipe: published\nmethods:").replace("train: {epochs: 2, batch_size: 100, head_lr: 0.1}", "train: {head_lr: 0.1}")
    text = published.replace(LINEAR_TRIAL, "    trial: {train: {head_lr: null, batch_size: 50}}", 1)
    study = load_study(_write(tmp_path, text))
    linear, provpt = study.methods
    task = study.task_specs[0]
    vpt = study.trial_config(linear, task)
    assert vpt.recipe == "vpt" and vpt.train.optimizer == "sgd" and vpt.train.grad_clip is None
    assert vpt.train.warmup_from_zero and vpt.train.no_decay == "head_bias" and vpt.train.schedule == "cosine"
    assert vpt.train.batch_size == 50  # the method's own trial section wins over its recipe
    assert vpt.train.head_lr is None and vpt.train.epochs == 100  # the recipe's
    reference = study.trial_config(provpt, task)
    assert reference.recipe == "provpt" and reference.train.precision == "fp32"
    assert reference.train.lr == 2.5 and reference.train.schedule == "constant" and reference.train.grad_clip == 0.25
    assert reference.method.relocation.idleness == "reference"
    assert reference.method.num_prompts == 1  # the method's config wins over the recipe's 20
    text = format_plan(study, make_plan(study), "/out", "sqlite:////out/mlflow.db")
    assert "  linear: published recipe 'vpt'" in text and "  provpt: published recipe 'provpt'" in text

    text = published.replace("  - name: linear", "  - name: linear\n    recipe: shared", 1)
    shared = load_study(_write(tmp_path, text))
    linear_shared = shared.trial_config(shared.methods[0], task)
    assert linear_shared.recipe == "shared" and linear_shared.train.grad_clip == 0.25  # the core's default


def test_a_method_without_a_sourced_recipe_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path))
    text = MICRO.replace("methods:", "recipe: published\nmethods:").replace("  - name: linear", "  - name: lora", 1)
    path = _write(tmp_path, text)
    with pytest.raises(StudyError, match=r"methods\[0\]\.recipe: no published recipe is sourced for method 'lora'"):
        load_study(path)


def test_a_search_that_changes_nothing_is_refused(tmp_path, monkeypatch):
    """The linear probe trains only its head: with train.head_lr set, its train.lr search is a no-op."""
    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path))
    no_op = MICRO.replace("    trial: {train: {head_lr: null}}  # the probe's head trains at the searched lr\n", "", 1)
    with pytest.raises(StudyError, match=r"methods\[0\]\.search\.train\.lr: linear trains only its head, at train\.head_lr=0\.1"):
        load_study(_write(tmp_path, no_op))
    linear = load_study(_write(tmp_path, MICRO)).methods[0]
    assert linear.trial == {"train": {"head_lr": None}}
    for path in (REPO / "studies").rglob("*.yaml"):  # every shipped study searches what it trains
        monkeypatch.setenv("VTAB_ROOT", "/data/vtab-1k")
        monkeypatch.setenv("FGVC_ROOT", "/data/fgvc")
        load_study(path)


def test_an_unset_root_is_asked_for_before_ray_starts(tmp_path, monkeypatch):
    from orchestrator.execution.driver import preflight

    monkeypatch.delenv("VTAB_ROOT", raising=False)
    study = load_study(REPO / "studies" / "ablations" / "vpt_length.yaml")
    assert study.data.roots == {}  # "${VTAB_ROOT:-}" unset: no root, rather than the root ""
    monkeypatch.setenv("ABLATION_TASKS", "vtab1k:natural")
    study = load_study(REPO / "studies" / "ablations" / "vpt_length.yaml")
    study = study.model_copy(update={"backbone": {"name": "provpt_tiny_patch8_32"}})
    problems = preflight(study, make_plan(study))
    assert problems[0] == "data.roots.vtab1k: task cifar needs the vtab1k root folder"
    assert len(problems) == len(study.task_specs)  # once per task, not once per method


def test_the_preflight_names_missing_weights_once_and_tables_the_data_problems(tmp_path, monkeypatch):
    from fixtures import make_vtab_task

    from orchestrator.execution.driver import preflight

    make_vtab_task(tmp_path / "vtab", "kitti")  # dtd is missing
    text = MICRO.replace("tasks: [mini_count, mini_loc]", "tasks: [kitti, dtd]").replace(
        "backbone: {name: provpt_tiny_patch8_32}",
        f"backbone: {{name: provpt_tiny_patch8_32, weights: {tmp_path / 'gone.safetensors'}}}\n"
        f"data: {{roots: {{vtab1k: {tmp_path / 'vtab'}}}}}",
    ).replace('data: {cache_dir: "${PROVPT_CACHE}"}\n', "")
    study = load_study(_write(tmp_path, text))
    problems = preflight(study, make_plan(study))
    assert len(problems) == 2, problems  # the weights once for 4 pipelines, then one data table
    assert problems[0].startswith("backbone: ") and "gone.safetensors does not exist" in problems[0]
    assert problems[0].endswith("(used by linear, provpt)")  # which methods it stops
    assert "kitti" in problems[1] and "dtd: missing folder" in problems[1]


def test_shipped_studies_load(monkeypatch):
    monkeypatch.setenv("VTAB_ROOT", "/data/vtab-1k")
    monkeypatch.setenv("FGVC_ROOT", "/data/fgvc")
    for path in sorted((REPO / "studies").rglob("*.yaml")):
        study = load_study(path)
        assert make_plan(study), path


class FakeTrial:
    """Stands in for optuna.Trial: returns the low end (or first choice) and records names."""

    def __init__(self):
        self.asked = []

    def suggest_float(self, name, low, high, step=None, log=False):
        self.asked.append(name)
        return low

    def suggest_int(self, name, low, high, step=1, log=False):
        self.asked.append(name)
        return low

    def suggest_categorical(self, name, choices):
        self.asked.append(name)
        return choices[0]


def test_conditional_space_samples_only_what_applies(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path))
    study = load_study(_write(tmp_path, MICRO))
    provpt = make_plan(study)[1]
    trial = FakeTrial()
    SearchSpace(provpt.method.search, provpt.base)(trial)
    assert trial.asked == ["train.lr", "method.relocation.allocator", "method.relocation.ppo.buffer_size"]
    thompson_first = MICRO.replace("choices: [ppo, thompson]", "choices: [thompson, ppo]")
    provpt = make_plan(load_study(_write(tmp_path, thompson_first)))[1]
    trial = FakeTrial()
    SearchSpace(provpt.method.search, provpt.base)(trial)
    assert trial.asked == ["train.lr", "method.relocation.allocator"]
    config = provpt.base.override({"method.relocation.allocator": "random", "train.lr": 0.3})
    assert config.method.relocation.allocator == "random" and config.train.lr == 0.3
    assert config.method.num_prompts == provpt.base.method.num_prompts and provpt.base.train.lr != 0.3


def test_selection_best_val_ties_to_smaller_lr_failed_ignored():
    records = [
        SearchRecord(0, "s/t/m/search/t0", {"train.lr": 0.5}, 0.80, 0.5),
        SearchRecord(1, "s/t/m/search/t1", {"train.lr": 0.1}, 0.80, 0.1),
        SearchRecord(2, "s/t/m/search/t2", {"train.lr": 0.05}, float("nan"), 0.05),
        SearchRecord(3, "s/t/m/search/t3", {"train.lr": 0.2}, 0.75, 0.2),
        SearchRecord(4, "s/t/m/search/t4", {"train.lr": 0.01}, None, 0.01),
    ]
    selection = select_best(records)
    assert selection.values == {"train.lr": 0.1} and selection.number == 1 and selection.trial == "s/t/m/search/t1"
    assert "best val_acc 0.8000 of 3 finished trials (Optuna trial 1, MLflow run t/m/search/t1)" in selection.reason
    assert "tied with Optuna trial 0 (lr 0.5): smaller lr 0.1 wins" in selection.reason
    assert "2 failed trials ignored" in selection.reason
    assert select_best(records[3:4]).values == {"train.lr": 0.2}
    with pytest.raises(ValueError, match="no search trial finished"):
        select_best([records[2], records[4]])


def test_a_search_resumes_from_its_optuna_study(tmp_path, monkeypatch):
    """A re-run after a killed driver: a trial Optuna was told is not run again, one it left
    running is asked again under its key (it continues from its checkpoint), the rest of the
    budget is asked anew; every trial is told its score (a diverged one: failed) with its
    MLflow run, and the records come in Optuna's order."""
    import threading

    import optuna

    from orchestrator.execution.exchange import Exchange
    from orchestrator.execution.tuning import PipelineJob, optuna_name, run_search

    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path))
    study = load_study(_write(tmp_path, MICRO.replace("search: {trials: 2,", "search: {trials: 4,")))
    study = study.model_copy(update={"search": study.search.model_copy(update={"asha": None})})
    linear = make_plan(study)[0]
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    job = PipelineJob(linear, study, str(tmp_path / "out"), "sqlite:///unused.db", "study-run", storage)
    earlier = optuna.create_study(study_name=optuna_name(job), storage=storage, direction="maximize")
    told = earlier.ask({"train.lr": optuna.distributions.FloatDistribution(0.05, 0.5, log=True)})
    earlier.tell(told, 0.5)
    left = earlier.ask({"train.lr": optuna.distributions.FloatDistribution(0.05, 0.5, log=True)})

    exchange = Exchange("resume-test")
    asked = []

    def tune_side() -> None:  # what the study's experiment does with each request
        while len(asked) < 3:
            request = exchange.next_request()
            if request is None:
                continue
            asked.append(request)
            diverged = request.values["optuna_trial"] == 2
            metrics = {"val_acc": float("nan"), "failed": 1} if diverged else {"val_acc": 0.1 * len(asked), "epoch": 2}
            exchange.started(request.key)
            exchange.ended(request.key, {**metrics, "mlflow_run_id": f"run-{request.values['optuna_trial']}"})

    thread = threading.Thread(target=tune_side)
    thread.start()
    records = run_search(job, exchange, "search-run")
    thread.join()

    assert asked[0].key == "micro/mini_count/linear/search/trial1"
    assert asked[0].values == {"train.lr": left.params["train.lr"], "optuna_trial": 1}
    assert [r.values["optuna_trial"] for r in asked[1:]] == [2, 3]
    assert [(r.number, r.trial.rsplit("/", 1)[1]) for r in records] == [(0, "trial0"), (1, "trial1"), (2, "trial2"), (3, "trial3")]
    assert [r.val_acc for r in records] == [0.5, 0.1, None, pytest.approx(0.3)]
    trials = optuna.load_study(study_name=optuna_name(job), storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert trials[3].user_attrs == {"mlflow_run_id": "run-3", "mlflow_run_name": "mini_count/linear/search/trial3"}
    assert trials[3].intermediate_values == {2: pytest.approx(0.3)} and trials[2].intermediate_values == {}
    counts = exchange.snapshot()["mini_count/linear"]["phases"]["search"]
    assert counts == {"ended": 4, "running": 0, "failed": 1, "total": 4, "best_val": 0.5}


def test_credentials_in_a_tracking_uri_stay_out_of_the_output_and_the_plan(tmp_path, monkeypatch, capsys):
    from orchestrator.execution.driver import claim_output, main

    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://bob:s3cret@127.0.0.1:5000")
    path = _write(tmp_path, MICRO + 'tracking: {uri: "${MLFLOW_TRACKING_URI}"}\n')
    study = load_study(path)
    assert study.tracking_uri(tmp_path) == "http://bob:s3cret@127.0.0.1:5000"  # the client still gets it
    claim_output(study, tmp_path / "out")
    recorded = (tmp_path / "out" / "study.json").read_text()
    assert "s3cret" not in recorded and "http://bob:***@127.0.0.1:5000" in recorded
    claim_output(study, tmp_path / "out")  # the same study resumes into its folder
    assert main([str(path), "--dry-run"]) == 0
    assert "s3cret" not in capsys.readouterr().out


PROVPT_ENTRY = "  - name: provpt\n    config: {num_prompts: 1}\n"


@pytest.mark.parametrize(
    "branches, message",
    [
        ("{fractions: [0.5], source: 0}", None),
        ("{epochs: [1], source: 0, targets: [11]}", None),
        ("{source: 0}", "methods[1].branches: give epochs (0-based, e.g. [25, 50, 75]) or fractions"),
        ("{epochs: [2], source: 0}", "methods[1].branches.epochs: expected epochs in [1, 1] (the trial trains 2), got 2"),
        ("{fractions: [1.5], source: 0}", "fractions: expected numbers in (0, 1)"),
        ("{epochs: [1], source: 0, targets: [12]}", "block 12 does not exist: provpt_tiny_patch8_32 has 12 blocks (0-11)"),
        ("{epochs: [1], source: 0, count: 2}", "methods[1].branches.count: 2 prompts cannot leave block 0, which starts with 1"),
    ],
)
def test_branches_are_checked_against_the_trial_and_the_backbone(tmp_path, monkeypatch, branches, message):
    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path))
    path = _write(tmp_path, MICRO.replace(PROVPT_ENTRY, f"{PROVPT_ENTRY}    branches: {branches}\n", 1))
    if message is None:
        study = load_study(path)
        pipeline = make_plan(study)[1]
        points = pipeline.branch_points()
        assert points == ([(1, b) for b in range(1, 12)] if "fractions" in branches else [(1, 11)])
        text = format_plan(study, make_plan(study), "/out", "sqlite:////out/mlflow.db")
        assert text.splitlines()[-2].split()[:4] == ["total", "8", "8", str(2 * 2 * len(points))]  # 2 tasks x 2 seeds
        return
    with pytest.raises(StudyError) as caught:
        load_study(path)
    assert message in str(caught.value)


def test_a_method_without_prompts_cannot_branch(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path))
    path = _write(tmp_path, MICRO.replace(LINEAR_TRIAL, LINEAR_TRIAL + "\n    branches: {epochs: [1], source: 0}", 1))
    with pytest.raises(StudyError, match=r"methods\[0\]\.branches: linear has no prompts to move; branch one of .*vpt_deep"):
        load_study(path)


def test_a_placeholder_with_a_numeric_default_is_a_number(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path))
    text = MICRO.replace("train: {epochs: 2,", 'train: {epochs: "${MICRO_EPOCHS:-3}",').replace(
        "resources: {cpu: 1}", 'resources: {cpu: 1, gpu: "${MICRO_GPU:-0}"}'
    )
    study = load_study(_write(tmp_path, text))
    assert study.trial_config(study.methods[0], study.task_specs[0]).train.epochs == 3 and study.resources.gpu == 0
    monkeypatch.setenv("MICRO_EPOCHS", "7")
    monkeypatch.setenv("MICRO_GPU", "0.25")
    study = load_study(_write(tmp_path, text))
    assert study.trial_config(study.methods[0], study.task_specs[0]).train.epochs == 7 and study.resources.gpu == 0.25
    monkeypatch.setenv("MICRO_EPOCHS", "many")
    with pytest.raises(StudyError, match=r"trial\.train\.epochs: expected a number in \$\{MICRO_EPOCHS\}, got 'many'"):
        load_study(_write(tmp_path, text))


def test_one_task_entry_may_list_several(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path))
    monkeypatch.setenv("MICRO_TASKS", "mini_count, mini_dist")
    study = load_study(_write(tmp_path, MICRO.replace("tasks: [mini_count, mini_loc]", 'tasks: ["${MICRO_TASKS}", mini_loc]')))
    assert [s.name for s in study.task_specs] == ["mini_count", "mini_dist", "mini_loc"]
