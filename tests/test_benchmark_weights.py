"""The benchmark form of the random weights (``make build-engines BENCHMARK=1``): a realistic people
count through the real decoder, only the classification biases changed, deterministic, and labelled
BENCHMARK where it is served. No server; the deploy graph runs on the CPU."""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
import torch

from rtmo_triton import spec
from rtmo_triton.build import repository as build
from rtmo_triton.model import RTMO, benchmark_model, random_model
from rtmo_triton.model.deploy import DeployRTMO
from rtmo_triton.model.fuse import fold_batchnorm
from rtmo_triton.served.postprocess import decode_batch
from rtmo_triton.served.preprocess import preprocess_batch

from .golden import CHECKPOINT_T, FIXTURES

VARIANT = spec.DEFAULT_VARIANT
SIZE = spec.VARIANTS[VARIANT].input_size
# what `make build-engines BENCHMARK=1` calibrates on (the Makefile's CALIBRATION)
CALIBRATION = [FIXTURES / "images", FIXTURES.parents[1] / "samples"]


@pytest.fixture(scope="module")
def calibration() -> tuple[np.ndarray, np.ndarray]:
    """The build's calibration photos as the served preprocess makes them: inputs and affines."""
    paths = build.calibration_paths(CALIBRATION)
    assert len(paths) == 7, paths  # six fixture photos and the sample image
    return preprocess_batch([p.read_bytes() for p in paths], SIZE, spec.DEFAULT_MAX_PIXELS)


@pytest.fixture(scope="module")
def benchmark(calibration):
    return benchmark_model(VARIANT, seed=build.RANDOM_SEED, images=list(calibration[0]))


@pytest.fixture(scope="module")
def plain() -> RTMO:
    return random_model(VARIANT, seed=build.RANDOM_SEED)


def served_people(model: RTMO, calibration) -> list[int]:
    """People per image through the deploy graph (BatchNorm folded, as exported) and the real decoder."""
    inputs, affines = calibration
    deploy = DeployRTMO(fold_batchnorm(copy.deepcopy(model)), spec.DEFAULT_TOPK).eval()
    with torch.no_grad():
        outputs = dict(zip(spec.ENGINE_OUTPUTS, (t.numpy() for t in deploy(torch.from_numpy(inputs)))))
    people = decode_batch(outputs, affines, spec.DEFAULT_SCORE_THR, spec.DEFAULT_NMS_THR)
    return [len(p.scores) for p in people]


def test_benchmark_weights_give_a_realistic_people_count(benchmark, calibration):
    model, cal = benchmark
    counts = served_people(model, calibration)
    assert 5 <= np.median(counts) <= 20, counts
    assert np.median(counts) == cal.median == spec.BENCHMARK_PEOPLE, (counts, cal)
    # the calibration's own count (the plain model, shifted logits) is the decoder's on the deploy graph
    assert max(abs(a - b) for a, b in zip(counts, cal.people)) <= 1, (counts, cal.people)


def test_plain_random_weights_pass_nearly_every_candidate(plain, calibration):
    """What the benchmark form is for: plain random weights serve about K people on every photo."""
    counts = served_people(plain, calibration)
    assert np.median(counts) > 50, counts


def test_only_the_classification_biases_differ_from_random_weights(benchmark, plain):
    model, cal = benchmark
    before, after = plain.state_dict(), model.state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"head.head_module.out_cls.{i}.bias" for i in range(len(spec.FEATMAP_STRIDES))}
    for k in changed:
        torch.testing.assert_close(after[k] - before[k], torch.full_like(before[k], cal.shift))
    assert cal.shift < 0  # fewer people than random weights: every score lowered


def test_wrong_calibration_images_are_refused_before_any_work():
    with pytest.raises(ValueError, match=rf"letterboxed \[3, {SIZE}, {SIZE}\].*\(3, 416, 416\)"):
        benchmark_model(VARIANT, images=[np.zeros((3, 416, 416), np.uint8)])
    with pytest.raises(ValueError, match="none"):
        benchmark_model(VARIANT, images=[])


@pytest.mark.parametrize("argv", [
    ["--benchmark-weights", "--checkpoint", str(CHECKPOINT_T)],
    ["--benchmark-weights", "--score-thr", "0"],
    ["--benchmark-weights", "--topk", str(spec.BENCHMARK_PEOPLE - 1)],
])
def test_the_flag_refuses_what_it_cannot_calibrate(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build.parse_args(argv)
    assert exc.value.code == 2
    assert "--benchmark-weights" in capsys.readouterr().err


def test_the_flag_parses():
    assert build.parse_args(["--benchmark-weights"]).benchmark_weights
    assert not build.parse_args([]).benchmark_weights


def test_calibration_images_need_the_benchmark_weights_and_must_exist(tmp_path, capsys):
    for argv in (["--calibration-images", str(FIXTURES / "images")],
                 ["--benchmark-weights", "--calibration-images", str(tmp_path / "absent")]):
        with pytest.raises(SystemExit):
            build.parse_args(argv)
        assert "--calibration-images" in capsys.readouterr().err


def test_the_build_serves_labelled_deterministic_benchmark_weights(benchmark):
    """load_weights as a build without a checkpoint calls it: the BENCHMARK banner, the provenance the
    ensemble's config carries, and the very weights benchmark_model gave (deterministic)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        model, provenance = build.load_weights(None, benchmark=True, calibration=CALIBRATION)
    assert "BENCHMARK RTMO-S" in err.getvalue() and "DETERMINISTIC RANDOM WEIGHTS" in err.getvalue()
    assert provenance[spec.Param.RANDOM_WEIGHTS] == "true"
    assert provenance[spec.Param.BENCHMARK_PEOPLE] == str(spec.BENCHMARK_PEOPLE)
    weights = provenance[spec.Param.WEIGHTS]
    assert "BENCHMARK model" in weights and f"~{spec.BENCHMARK_PEOPLE} people per image" in weights
    assert "not a trained model" in weights and "seed 0" in weights
    expected = benchmark[0].state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


def test_plain_random_provenance_has_no_benchmark_label():
    with contextlib.redirect_stderr(io.StringIO()) as err:
        _, provenance = build.load_weights(None)
    assert "BENCHMARK" not in err.getvalue()
    assert spec.Param.BENCHMARK_PEOPLE not in provenance and "BENCHMARK" not in provenance[spec.Param.WEIGHTS]


def test_perf_runs_name_benchmark_weights(tmp_path):
    """make perf records what was served; benchmark weights are not mistaken for plain random ones."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from perf.perf_sweep import run_facts

    P = spec.Param
    config = mc.ModelConfig(name=spec.ENSEMBLE_NAME)
    for key, value in {P.VARIANT: "s", P.INPUT_SIZE: "640", P.KEYPOINT_DATASET: "coco", P.TOPK: "100",
                       P.ENGINE_FLAVOUR: "onnx", P.RANDOM_WEIGHTS: "true", P.BENCHMARK_PEOPLE: "10"}.items():
        config.parameters[key].string_value = value
    (tmp_path / spec.ENSEMBLE_NAME).mkdir()
    (tmp_path / spec.ENSEMBLE_NAME / "config.pbtxt").write_text(text_format.MessageToString(config))
    assert run_facts(tmp_path)["model"].endswith("BENCHMARK random weights (~10 people per image)")
    del config.parameters[P.BENCHMARK_PEOPLE]
    (tmp_path / spec.ENSEMBLE_NAME / "config.pbtxt").write_text(text_format.MessageToString(config))
    assert run_facts(tmp_path)["model"].endswith(", random weights")
