"""The production Triton model repository serves exactly the platform's contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tests.deploy.metric_names import REPO

pytestmark = pytest.mark.fast

MODELS = REPO / "deploy" / "triton" / "model_repository"
STRING, FP32, INT64 = mc.DataType.TYPE_STRING, mc.DataType.TYPE_FP32, mc.DataType.TYPE_INT64


def load(name: str) -> mc.ModelConfig:
    return text_format.Parse((MODELS / name / "config.pbtxt").read_text(), mc.ModelConfig())


def all_configs() -> dict[str, mc.ModelConfig]:
    return {p.parent.name: load(p.parent.name) for p in sorted(MODELS.glob("*/config.pbtxt"))}


def tensors(specs) -> dict[str, tuple[int, list[int]]]:
    return {t.name: (t.data_type, list(t.dims)) for t in specs}


def test_every_config_names_its_folder_and_has_a_version_folder() -> None:
    for folder, config in all_configs().items():
        assert config.name == folder
        assert (MODELS / folder / "1").is_dir(), f"{folder}/1 is missing"


def test_embedding_exposes_the_platform_contract() -> None:
    config = load("embedding")
    assert config.platform == "ensemble"
    assert config.max_batch_size == 64
    assert tensors(config.input) == {"TEXT": (STRING, [1])}
    assert tensors(config.output) == {"EMBEDDING": (FP32, [384])}


def test_reranker_exposes_the_platform_contract() -> None:
    config = load("reranker")
    assert config.platform == "ensemble"
    assert config.max_batch_size == 64
    assert tensors(config.input) == {"QUERY": (STRING, [1]), "PASSAGE": (STRING, [1])}
    assert tensors(config.output) == {"SCORE": (FP32, [1])}


@pytest.mark.parametrize("ensemble", ["embedding", "reranker"])
def test_ensemble_is_a_python_tokenizer_then_an_onnx_encoder(ensemble: str) -> None:
    steps = [s.model_name for s in load(ensemble).ensemble_scheduling.step]
    assert steps == [f"{ensemble}_tokenizer", f"{ensemble}_encoder"]
    tokenizer, encoder = load(steps[0]), load(steps[1])
    assert tokenizer.backend == "python"
    assert encoder.platform == "onnxruntime_onnx"
    assert encoder.max_batch_size == 64
    assert [(g.count, g.kind) for g in encoder.instance_group] == [(2, mc.ModelInstanceGroup.Kind.KIND_GPU)]
    for step in (tokenizer, encoder):
        assert list(step.dynamic_batching.preferred_batch_size) == [16, 32, 64]
        assert step.max_batch_size == 64


@pytest.mark.parametrize("ensemble", ["embedding", "reranker"])
def test_ensemble_wiring_matches_each_step_model(ensemble: str) -> None:
    """Every tensor a step maps exists in that step's model with the type flowing in."""
    config = load(ensemble)
    available = tensors(config.input)  # ensemble tensors known so far: name -> (type, dims)
    for step in config.ensemble_scheduling.step:
        model = load(step.model_name)
        inputs, outputs = tensors(model.input), tensors(model.output)
        assert set(step.input_map) == set(inputs), f"{step.model_name}: inputs {set(inputs)}"
        for model_input, ensemble_tensor in step.input_map.items():
            assert ensemble_tensor in available, f"{ensemble_tensor} is not produced before {step.model_name}"
            assert available[ensemble_tensor][0] == inputs[model_input][0]
        for model_output, ensemble_tensor in step.output_map.items():
            assert model_output in outputs, f"{step.model_name} has no output {model_output}"
            available[ensemble_tensor] = outputs[model_output]
    for out in config.output:
        assert available.get(out.name) == (out.data_type, list(out.dims)), out.name


def test_tokenizers_emit_int64_ids_and_masks() -> None:
    for name in ("embedding_tokenizer", "reranker_tokenizer"):
        assert tensors(load(name).output) == {"input_ids": (INT64, [-1]), "attention_mask": (INT64, [-1])}


def test_the_two_tokenizer_models_share_one_implementation() -> None:
    # One file: the reranker's model.py links to the embedding's (each reads its own
    # tokenizer.json from args["model_repository"], so the link changes nothing else).
    shared = MODELS / "embedding_tokenizer/1/model.py"
    link = MODELS / "reranker_tokenizer/1/model.py"
    assert link.is_symlink() and link.resolve() == shared.resolve()
    compile(shared.read_text(), "model.py", "exec")


def test_weights_are_not_committed() -> None:
    heavy = [p for p in MODELS.rglob("*") if p.is_file() and p.suffix in {".onnx", ".bin", ".safetensors"}]
    assert not heavy, heavy
    assert "model.onnx" in (MODELS / "README.md").read_text()


def test_readme_paths_exist() -> None:
    for folder in ("embedding_tokenizer", "embedding_encoder", "reranker_tokenizer", "reranker_encoder"):
        assert Path(MODELS / folder / "1").is_dir()
