"""The paper's experiment configs: each runs end to end on fixture data in the official on-disk
format (`runlocal`), its arguments change what they claim to, and missing data stops a run with
the data layer's instructions."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import data_fixtures as fixtures
import numpy as np
import pytest
from flax import nnx

from experiments import mmimdb, nyudv2, sunrgbd, taskonomy
from experiments.common import PARTITION_PATTERNS, method_configs, use_pretrained
from mango_jax import data, encoders, flows
from mango_jax.data.spec import get_spec
from mango_jax.data.tokenizer import ClipTokenizer
from mango_jax.flows.ica import ICA
from mango_jax.flows.lica import LICA
from mango_jax.metrics import make_evaluator

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 420
CONFIGS = {"mmimdb": mmimdb, "nyudv2": nyudv2, "sunrgbd": sunrgbd, "taskonomy": taskonomy}
TASKONOMY_DOMAINS = ("rgb", "reshading", "edge_texture")
CLIP_TOKENIZER = REPO / "tests" / "data" / "clip_tokenizer"


@pytest.fixture(scope="module")
def run_main(tmp_path_factory):
    """`python -m experiments.main` as a user runs it, in this environment (XLA_FLAGS included)
    plus a JAX compilation cache shared by the module's runs: the configs have many small
    programs in common (parameter initialisers, optimiser updates), which then compile once."""
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}

    def run(config_arg: str, data_dir, workdir, *flags) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "experiments.main", f"--config={config_arg}",
             f"--config.data.data_dir={data_dir}", f"--workdir={workdir}", *flags],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)

    return run


WRITERS = {  # Raw files in the official layout, at least one global batch (8) to train on.
    "mmimdb": (lambda d: fixtures.write_mmimdb_hdf5(d, n=14), {"split_rows": "8,11"}),
    "nyudv2": (lambda d: fixtures.write_nyu_folder(d, n_train=8, n_test=3), {}),
    "sunrgbd": (lambda d: fixtures.write_sunrgbd(d, n_train=8, n_test=3), {}),
    "taskonomy": (lambda d: fixtures.write_taskonomy(d, n_train=8, n_val=3,
                                                     domains=TASKONOMY_DOMAINS), {}),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """`data_dir(name)`: a data_dir holding `name` prepared from fixture files (once per module
    and test process)."""
    done = {}

    def get(name: str) -> str:
        if name not in done:
            root = tmp_path_factory.mktemp(name)
            write, options = WRITERS[name]
            write(str(root / "raw"))
            get_spec(name).prepare(data_dir=str(root / "data"), manual_dir=str(root / "raw"),
                                   **options)
            done[name] = str(root / "data")
        return done[name]

    return get


# ---------------------------------------------------------------------------------------------
# End to end.


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_runlocal_trains_and_reports(name, data_dir, run_main, tmp_path):
    proc = run_main(f"experiments/{name}.py:runlocal", data_dir(name), tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    config = CONFIGS[name].get_config("runlocal")
    config.data.data_dir = data_dir(name)
    info = data.dataset_info(config.data)
    evaluator = make_evaluator(info.task, num_classes=info.num_classes,
                               ignore_index=info.ignore_index)
    metrics = set(evaluator.finalize(evaluator.init()))
    assert metrics
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {*config.eval_splits, "meta"}
    for split in config.eval_splits:
        for metric in metrics:
            assert math.isfinite(results[split][metric]), (split, metric, results[split])
    meta = results["meta"]
    assert meta["experiment"] == name
    assert meta["steps"] == config.num_steps
    assert meta["sources"] == list(config.data.modalities)
    assert meta["fusion"] == "mango" and meta["fusion_details"]["flow_layer"] == "mango"
    if name == "taskonomy":  # experiments/report.py finds Table 2's row by sources and target.
        assert meta["target"] == config.data.target


def test_dynmm_reports_path_shares_and_compute_saved(data_dir, run_main, tmp_path):
    """DynMM at its fusion level (a dense task; the modality level is checked by
    tests/experiments/test_end_to_end.py): the eval shares of its paths, and the FLOPs and
    compute saved they imply, land in results.json."""
    proc = run_main("experiments/nyudv2.py:fusion=dynmm,runlocal", data_dir("nyudv2"), tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    meta = results["meta"]
    details = meta["fusion_details"]
    assert details["level"] == "fusion" and details["paths"] == ["0", "1"]  # runlocal: L=1
    flops = details["path_flops"]
    assert list(flops) == details["paths"] and flops[details["paths"][0]] < max(flops.values())
    splits = [s for s in results if s != "meta"]
    assert set(meta["diagnostics"]) == set(splits)
    for split in splits:
        shares = {p: results[split][f"dynmm/share_{p}"] for p in details["paths"]}
        assert sum(shares.values()) == pytest.approx(1.0) and min(shares.values()) >= 0
        report = meta["diagnostics"][split]
        assert report["shares"] == pytest.approx(shares)
        dynamic = details["gate_flops"] + sum(shares[p] * flops[p] for p in flops)
        assert report["flops_per_example"] == pytest.approx(dynamic)
        assert report["compute_saved"] == pytest.approx(1 - dynamic / max(flops.values()))


def test_mmimdb_forms_read_their_own_prepared_data(tmp_path):
    """form=original reads the original release's preparation, form=hdf5 the MultiBench one."""
    fixtures.write_mmimdb_original(str(tmp_path / "raw"))
    get_spec("mmimdb").prepare(data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path / "raw"))
    original = mmimdb.get_config("form=original,runlocal")
    original.data.data_dir = str(tmp_path / "data")
    data.ensure_prepared(original.data)
    assert data.dataset_info(original.data).metadata["form"] == "original"
    hdf5 = mmimdb.get_config("form=hdf5,runlocal")
    hdf5.data.data_dir = str(tmp_path / "data")
    with pytest.raises(data.DataNotFoundError):
        data.ensure_prepared(hdf5.data)


def test_mmimdb_without_data_stops_with_instructions(run_main, tmp_path):
    proc = run_main("experiments/mmimdb.py", tmp_path / "empty", tmp_path / "work")
    config = mmimdb.get_config()
    config.data.data_dir = str(tmp_path / "empty")
    message = get_spec("mmimdb").missing_message(config.data)
    assert proc.returncode == 2
    assert f"error: {message}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "work" / "checkpoints").exists()


# ---------------------------------------------------------------------------------------------
# What each argument changes.


def built_flow(config, tokens=(4, 4)):
    """G as the config builds it, at a tiny width."""
    flow = config.model.fusion.flow.copy_and_resolve_references()
    flow.dim, flow.num_heads, flow.coupling_hidden = 16, 2, 16
    flow.tokens_per_modality = tokens
    return flows.build(flow, rngs=nnx.Rngs(0))


def module_types(module) -> list[type]:
    return [type(m) for _, m in nnx.iter_graph(module) if isinstance(m, nnx.Module)]


@pytest.mark.parametrize("layer", flows.LAYERS)
@pytest.mark.parametrize("name", ["nyudv2", "sunrgbd", "taskonomy"])
def test_flow_argument_selects_the_layer_of_g(name, layer):
    config = CONFIGS[name].get_config(f"flow={layer},blocks=1")
    assert config.model.fusion.flow.layer == layer
    types = module_types(built_flow(config))
    has_ica = any(issubclass(t, ICA) for t in types)
    assert has_ica == (layer == "mango")
    if layer != "mango":
        assert any(t.__module__ == f"mango_jax.flows.{layer}" for t in types)


@pytest.mark.parametrize("blocks", [6, 8, 12, 16])
def test_blocks_argument_sets_depth_of_g_and_of_baselines(blocks):
    for name, module in CONFIGS.items():
        config = module.get_config(f"blocks={blocks}")
        assert config.model.fusion.flow.num_blocks == blocks, name
        baseline = module.get_config(f"blocks={blocks},fusion=tokenfusion")
        assert baseline.model.fusion.name == "tokenfusion"
        assert baseline.model.fusion.num_layers == blocks, name
    assert len(built_flow(nyudv2.get_config("blocks=2,runlocal")).children()) == 1  # runlocal: 1


@pytest.mark.parametrize("name", ["nyudv2", "sunrgbd"])
def test_partitions_argument_sets_the_ica_layers_of_a_block(name):
    counts = {}
    for partitions in PARTITION_PATTERNS:
        config = CONFIGS[name].get_config(f"partitions={partitions},blocks=1")
        pattern = config.model.fusion.flow.block_pattern
        assert pattern[-1] == "coupling"
        kinds = {kind.split("_")[0] for kind in pattern[:-1]}
        assert kinds == set(partitions.split("+"))
        types = module_types(built_flow(config))
        counts[partitions] = (sum(t is ICA for t in types), sum(t is LICA for t in types))
        assert counts[partitions] == (len(pattern) - 1, pattern.count("lica"))
    assert CONFIGS[name].get_config().model.fusion.flow.block_pattern == \
        flows.DEFAULT_BLOCK_PATTERN
    # Table 5's rows: 2 MMCA; + 4 IMCA; + 2 LICA (each mixes tokens around an ICA of its own).
    assert counts == {"mmca": (2, 0), "mmca+imca": (6, 0), "mmca+imca+lica": (8, 2)}
    with pytest.raises(ValueError, match="flow=glow has no ICA partitions"):
        nyudv2.get_config("flow=glow,partitions=mmca")


@pytest.mark.parametrize("name", ["nyudv2", "sunrgbd", "taskonomy"])
def test_latent_argument_keeps_or_drops_the_vit_blocks(name):
    for latent in (True, False):
        config = CONFIGS[name].get_config(f"latent={str(latent).lower()},runlocal")
        assert config.model.latent_model is latent
        size, patch = config.data.image_size, config.model.encoder.patch_size
        encoder = encoders.ModalityEncoder(
            "image", (size, size, 3), dim=config.model.dim, num_tokens=(size // patch) ** 2,
            latent=config.model.latent_model, config=config.model.encoder, rngs=nnx.Rngs(0))
        assert len(encoder.net.blocks) == (config.model.encoder.depth if latent else 0)


def test_taskonomy_sources_and_target_become_modalities_and_label():
    config = taskonomy.get_config("sources=depth_zbuffer+normal,target=rgb")
    assert tuple(config.data.modalities) == ("depth_zbuffer", "normal")
    assert tuple(config.data.sources) == ("depth_zbuffer", "normal")
    assert config.data.target == "rgb"
    config.lock()  # As main locks it: each source's MAE path must be an existing field.
    config.model.encoder.pretrained.normal = "mae.npz"
    config = taskonomy.get_config("sources=rgb+reshading,target=normal")
    assert (tuple(config.data.modalities), config.data.target) == (("rgb", "reshading"),
                                                                    "normal")
    for bad in ("sources=rgb+normal,target=rgb", "sources=rgb", "sources=rgb+shade"):
        with pytest.raises(ValueError):
            taskonomy.get_config(bad)


def test_mmimdb_poster_keeps_its_grid_and_text_is_resampled_to_it():
    for arg in (None, "runlocal"):
        config = mmimdb.get_config(arg)
        h, w = config.data.image_size
        poster = encoders.natural_tokens("image", (h, w, 3), config.model.encoder)
        text = encoders.natural_tokens("tokens", (config.data.max_text_len,),
                                       config.model.encoder)
        assert poster == config.model.tokens_per_modality != text
    assert mmimdb.get_config("form=original").data.form == "original"
    assert mmimdb.get_config().data.form == "multibench"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_unknown_or_invalid_arguments_fail_with_the_valid_choices(name):
    module = CONFIGS[name]
    with pytest.raises(ValueError, match="valid: .*'runlocal'"):
        module.get_config("bogus=1")
    with pytest.raises(ValueError, match="choose from"):
        module.get_config("fusion=mango+nonesuch")
    assert module.get_config("fusion=mango+late").compare == ("mango", "late")


@pytest.mark.parametrize("name", ["nyudv2", "sunrgbd", "taskonomy"])
def test_dense_configs_refuse_pooled_fusions(name):
    with pytest.raises(ValueError, match="dense"):
        CONFIGS[name].get_config("fusion=gmu")
    assert "gmu" not in CONFIGS[name].get_config("fusion=all").compare
    assert "gmu" in mmimdb.get_config("fusion=all").compare


def test_dynmm_takes_its_fusion_level_on_dense_tasks():
    """Also when several methods are compared: each takes its dense defaults."""
    for config in (nyudv2.get_config("fusion=dynmm"),
                   method_configs(nyudv2.get_config("fusion=all"))["dynmm"]):
        assert config.model.fusion.level == "fusion"
        assert config.model.fusion.num_layers == 12  # MANGO's depth
    assert {"dynmm", "concat"} <= set(nyudv2.get_config("fusion=all").compare)
    for config in (mmimdb.get_config("fusion=dynmm"),
                   method_configs(mmimdb.get_config("fusion=all"))["dynmm"]):
        assert config.model.fusion.level == "modality"


@pytest.mark.parametrize("method", ["tokenfusion", "geminifusion"])
def test_rgbd_baselines_share_their_layers_between_modalities(method):
    """RGB-depth is homogeneous: TokenFusion and GeminiFusion share their transformer layers
    there, as their papers do, also when several methods are compared; on image + text
    (MM-IMDB) they stay separate."""
    for module in (nyudv2, sunrgbd):
        for config in (module.get_config(f"fusion={method}"),
                       method_configs(module.get_config(f"fusion={method}+mango"))[method]):
            assert config.homogeneous_modalities and config.model.fusion.shared_weights
    for config in (mmimdb.get_config(f"fusion={method}"),
                   method_configs(mmimdb.get_config("fusion=all"))[method]):
        assert not config.model.fusion.shared_weights


def test_every_config_sets_the_same_run_fields():
    """Each file sets its schedule and checkpoint policy itself (no default behind it): every
    config, runlocal or not, has the same top-level fields, so the same overrides apply."""
    from experiments import mfeat

    fields = {(name, arg): set(module.get_config(arg).keys())
              for name, module in {**CONFIGS, "mfeat": mfeat}.items()
              for arg in (None, "runlocal")}
    assert len({frozenset(f) for f in fields.values()}) == 1, fields
    assert {"batch_size", "num_steps", "num_epochs", "best_metric", "eval_splits"} <= \
        fields["mfeat", None]


def test_paper_protocol_sizes():
    """L = 12, 256-pixel image sides, and an MAE checkpoint field for every image modality."""
    for name, module in CONFIGS.items():
        config = module.get_config()
        assert config.model.fusion.flow.num_blocks == 12, name
        size = config.data.image_size
        assert (size if isinstance(size, int) else size[0]) == 256, name
        for modality in config.data.modalities:
            if name != "mmimdb" or modality == "image":
                assert modality in config.model.encoder.pretrained, (name, modality)


# ---------------------------------------------------------------------------------------------
# Pretrained encoders.


def test_pretrained_paper_points_every_encoder_at_its_checkpoint_folder():
    mae, clip = "data/weights/vit-mae-base", "data/weights/clip-vit-base-patch16"
    for name, module in CONFIGS.items():
        paper = module.get_config("pretrained=paper").model.encoder.pretrained
        expect = {m: mae for m in module.get_config().data.modalities}
        if name == "mmimdb":
            expect = {"image": mae, "text": clip}
        assert dict(paper) == expect, name
        assert all(v is None for v in module.get_config().model.encoder.pretrained.values())
    config = mmimdb.get_config("pretrained=paper")
    assert (config.data.form, config.data.tokenizer) == ("original", "clip")
    assert config.data.max_text_len == config.model.encoder.text_max_len == 77
    with pytest.raises(ValueError, match="use form='original'"):
        mmimdb.get_config("form=hdf5,pretrained=paper")
    with pytest.raises(ValueError, match="valid: paper"):
        nyudv2.get_config("pretrained=mae")


def test_checkpoint_statistics_normalise_the_inputs(tmp_path):
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": mean, "image_std": std}))
    config = nyudv2.get_config()
    config.model.encoder.pretrained.rgb = config.model.encoder.pretrained.depth = str(tmp_path)
    use_pretrained(config)
    assert config.data.rgb_mean == tuple(mean) and config.data.rgb_std == tuple(std)
    assert config.data.depth_mean == pytest.approx(0.4)
    assert config.data.depth_std == pytest.approx(0.25)
    poster = mmimdb.get_config()
    (tmp_path / "model.safetensors").write_bytes(b"")  # only its folder is read here
    poster.model.encoder.pretrained.image = str(tmp_path / "model.safetensors")
    use_pretrained(poster)
    assert poster.data.rgb_mean == tuple(mean)
    poster.model.encoder.pretrained.text = str(tmp_path)
    with pytest.raises(ValueError, match="data.tokenizer=clip"):
        use_pretrained(poster)  # CLIP's tower on the HDF5's word indices


def test_missing_checkpoint_stops_at_once_with_the_download_command(run_main, tmp_path):
    path = tmp_path / "weights" / "vit-mae-base"
    proc = run_main("experiments/nyudv2.py:runlocal", tmp_path / "empty", tmp_path / "work",
                    f"--config.model.encoder.pretrained.depth={path}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: model.encoder.pretrained.depth: no checkpoint at '{path}'; download it with "
        f"`hf download facebook/vit-mae-base --local-dir {path}`")
    assert "Traceback" not in proc.stderr and not (tmp_path / "work").exists()


def add_blocks(w: dict, t, prefix: str, *, depth: int, width: int, hidden: int, linears, norms):
    """Random weights of `depth` transformer blocks `{prefix}{i}.` in a hub checkpoint's names:
    `linears` the query, key, value, output, MLP-up and MLP-down projections (in that order),
    `norms` the two layer norms."""
    shapes = dict(zip(linears, [(width, width)] * 4 + [(hidden, width), (width, hidden)],
                      strict=True))
    for i in range(depth):
        p = f"{prefix}{i}."
        for name, (out, fan_in) in shapes.items():
            w[p + name + ".weight"], w[p + name + ".bias"] = t(out, fan_in), t(out)
        for name in norms:
            w[p + name + ".weight"], w[p + name + ".bias"] = 1 + t(width), t(width)


def write_mae(folder: Path, *, width=32, heads=2, depth=1, hidden=64, patch=8, image=32,
              mean=(0.5, 0.45, 0.4), std=(0.25, 0.2, 0.3)) -> str:
    """A random ViTMAEForPreTraining folder as `facebook/vit-mae-base` lays it out (weights under
    `vit.`, a decoder tensor, config.json, preprocessor_config.json), at runlocal sizes."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)

    def t(*shape):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)

    n = (image // patch) ** 2
    w = {"vit.embeddings.patch_embeddings.projection.weight": t(width, 3, patch, patch),
         "vit.embeddings.patch_embeddings.projection.bias": t(width),
         "vit.embeddings.cls_token": t(1, 1, width),
         "vit.embeddings.position_embeddings": t(1, n + 1, width),
         "vit.layernorm.weight": 1 + t(width), "vit.layernorm.bias": t(width),
         "decoder.decoder_embed.weight": t(8, width)}
    add_blocks(w, t, "vit.encoder.layer.", depth=depth, width=width, hidden=hidden,
               linears=("attention.attention.query", "attention.attention.key",
                        "attention.attention.value", "attention.output.dense",
                        "intermediate.dense", "output.dense"),
               norms=("layernorm_before", "layernorm_after"))
    folder.mkdir(parents=True)
    save_file(w, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["ViTMAEForPreTraining"], "model_type": "vit_mae", "hidden_size": width,
        "num_attention_heads": heads, "num_hidden_layers": depth, "intermediate_size": hidden,
        "hidden_act": "gelu", "layer_norm_eps": 1e-12, "image_size": image, "patch_size": patch,
        "num_channels": 3}))
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": list(mean), "image_std": list(std)}))
    return str(folder)


def write_clip(folder: Path, *, vocab: int, width=32, heads=2, depth=1, hidden=64) -> str:
    """A random full CLIPModel folder as `openai/clip-vit-base-patch16` lays it out (text tower
    under `text_model.`, vision tower and projections beside it, config.json with text_config,
    the tokenizer fixture's tokenizer.json)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(1)

    def t(*shape):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)

    w = {"text_model.embeddings.token_embedding.weight": t(vocab, width),
         "text_model.embeddings.position_embedding.weight": t(77, width),
         "text_model.final_layer_norm.weight": 1 + t(width),
         "text_model.final_layer_norm.bias": t(width),
         "text_projection.weight": t(16, width), "visual_projection.weight": t(16, 24),
         "vision_model.embeddings.class_embedding": t(24)}
    add_blocks(w, t, "text_model.encoder.layers.", depth=depth, width=width, hidden=hidden,
               linears=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                        "self_attn.out_proj", "mlp.fc1", "mlp.fc2"),
               norms=("layer_norm1", "layer_norm2"))
    folder.mkdir(parents=True)
    save_file(w, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": 16,
        "text_config": {"model_type": "clip_text_model", "hidden_size": width,
                        "num_attention_heads": heads, "num_hidden_layers": depth,
                        "intermediate_size": hidden, "hidden_act": "quick_gelu",
                        "layer_norm_eps": 1e-5, "vocab_size": vocab,
                        "max_position_embeddings": 77, "eos_token_id": 2}}))
    shutil.copy(CLIP_TOKENIZER / "tokenizer.json", folder / "tokenizer.json")
    return str(folder)


@pytest.mark.parametrize("name", ["mmimdb", "nyudv2"])
def test_runlocal_with_pretrained_checkpoints(name, data_dir, run_main, tmp_path):
    """pretrained=paper with the checkpoint folders pointed at random weights in the hubs'
    layouts: the encoders load, the inputs take the checkpoint's statistics, and the run trains
    and reports (MM-IMDB on CLIP ids of the original release)."""
    mae = write_mae(tmp_path / "weights" / "vit-mae-base")
    if name == "mmimdb":
        vocab = ClipTokenizer(str(CLIP_TOKENIZER)).vocab_size
        clip = write_clip(tmp_path / "weights" / "clip-vit-base-patch16", vocab=vocab)
        splits = {"train": [f"t{i}" for i in range(8)], "dev": ["v0", "v1"], "test": ["s0"]}
        fixtures.write_mmimdb_original(str(tmp_path / "raw"), splits)
        get_spec("mmimdb").prepare(data_dir=str(tmp_path / "data"),
                                   manual_dir=str(tmp_path / "raw"), tokenizer=clip)
        where, flags = tmp_path / "data", [f"--config.model.encoder.pretrained.image={mae}",
                                           f"--config.model.encoder.pretrained.text={clip}"]
    else:
        where, flags = data_dir(name), [f"--config.model.encoder.pretrained.rgb={mae}",
                                        f"--config.model.encoder.pretrained.depth={mae}"]
    proc = run_main(f"experiments/{name}.py:pretrained=paper,runlocal", where,
                    tmp_path / "work", *flags)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    config = CONFIGS[name].get_config("pretrained=paper,runlocal")
    for split in config.eval_splits:
        assert all(math.isfinite(v) for v in results[split].values()), results[split]
    run_config = json.loads((tmp_path / "work" / "config.json").read_text())
    assert run_config["data"]["rgb_mean"] == [0.5, 0.45, 0.4]
    if name == "nyudv2":
        assert run_config["data"]["depth_mean"] == pytest.approx(0.45)
        assert run_config["data"]["depth_std"] == pytest.approx(0.25)
    else:
        assert run_config["data"]["tokenizer"] == "clip"
