"""The results report: fake results.json files in tmp workdirs -> Markdown and CSV tables."""

import csv
import json
import os
import subprocess
import sys

import pytest
from absl import flags

from experiments import report

FULL = ["mmca", "imca", "lica"]


def _meta(experiment, fusion="mango", flow_layer="mango", num_blocks=12, partitions=FULL,
          latent_model=True, sources=("rgb", "depth"), target="segmentation", **extra):
    """`meta` as the training loop writes it: MANGO's settings are what its fusion module
    describes (`fusion_details`; a baseline flow layer has no partitions), a baseline's depth
    is its config's `num_layers`."""
    if fusion == "mango":
        details = dict(flow_layer=flow_layer, num_blocks=num_blocks,
                       partitions=list(partitions) if flow_layer == "mango" else None)
        config = {}
    else:
        details, config = {}, {"model": {"fusion": {"name": fusion, "num_layers": num_blocks}}}
    meta = dict(experiment=experiment, fusion=fusion, fusion_details=details,
                latent_model=latent_model, sources=list(sources), target=target,
                params=72_900_000, train_time_s=12.5, steps=100, config=config, diagnostics={})
    return {**meta, **extra}


def _flat_meta(experiment, **settings):
    """`meta` of a run written before `fusion_details`: the settings at its top level."""
    meta = _meta(experiment, **settings)
    return {**{k: v for k, v in meta.items() if k != "fusion_details"},
            **meta["fusion_details"]}


def _seg(acc, macc, miou):
    return {"pixel_acc": acc, "mean_acc": macc, "miou": miou}


RUNS = {
    # Main configuration, two seeds on NYUDv2 (averaged), one on SUN RGB-D.
    "nyu_mango_s0": ({"test": _seg(0.80, 0.70, 0.50)}, _meta("nyudv2")),
    "nyu_mango_s1": ({"test": _seg(0.82, 0.72, 0.52)}, _flat_meta("nyudv2")),
    "sun_mango": ({"test": _seg(0.7, 0.6, 0.4), "val": _seg(0.1, 0.1, 0.1)}, _meta("sunrgbd")),
    # Ablations.
    "nyu_glow": ({"test": _seg(0.75, 0.65, 0.4321)}, _meta("nyudv2", flow_layer="glow")),
    "nyu_mmca": ({"test": _seg(0.7, 0.6, 0.3456)}, _meta("nyudv2", partitions=["mmca"])),
    "nyu_imca_only": ({"test": _seg(0.7, 0.6, 0.2222)}, _meta("nyudv2", partitions=["imca"])),
    "nyu_b6_nolatent": ({"test": _seg(0.7, 0.6, 0.3333)},
                        _meta("nyudv2", num_blocks=6, latent_model=False)),
    "nyu_realnvp_old": ({"test": _seg(0.7, 0.6, 0.3987)},
                        _flat_meta("nyudv2", flow_layer="realnvp", partitions=FULL)),
    "nyu_b4": ({"val": _seg(0.6, 0.5, 0.1111)}, _meta("nyudv2", num_blocks=4)),
    # Baselines.
    "nyu_tokenfusion_tiny": ({"test": _seg(0.7, 0.6, 0.4444)},
                             _meta("nyudv2", fusion="tokenfusion", variant="tiny")),
    "nyu_tokenfusion": ({"test": _seg(0.7, 0.6, 0.4555)}, _meta("nyudv2", fusion="tokenfusion")),
    "nyu_gemini": ({"test": _seg(0.7, 0.6, 0.4666)},
                   _meta("nyudv2", fusion="geminifusion", params=75_000_000)),
    # MM-IMDB.
    "mmimdb_mango": ({"test": {"micro_f1": 0.6543, "macro_f1": 0.5432}},
                     _meta("mmimdb", sources=["image", "text"], target="genres")),
    "mmimdb_text": ({"test": {"micro_f1": 0.5, "macro_f1": 0.4}},
                    _meta("mmimdb", fusion="unimodal", sources=["text"], target="genres")),
    "mmimdb_gmu": ({"test": {"micro_f1": 0.55, "macro_f1": 0.45}},
                   _meta("mmimdb", fusion="gmu", sources=["image", "text"], target="genres")),
    # Taskonomy.
    "tx_mango": ({"test": {"mae": 0.2, "mse": 0.1, "fid": 50.0, "kid": 0.0123}},
                 _meta("taskonomy", sources=["reshading", "edge_texture"], target="rgb")),
    "tx_gemini": ({"test": {"mae": 0.2, "mse": 0.1, "fid": 52.5, "kid": 0.02}},
                  _meta("taskonomy", fusion="geminifusion", sources=["reshading", "edge_texture"],
                        target="rgb")),
    "tx_normal": ({"test": {"mae": 0.0345, "mse": 0.0123}},
                  _meta("taskonomy", sources=["rgb", "reshading"], target="normal")),
    # The mfeat demo fits no paper table.
    "mfeat": ({"test": {"accuracy": 0.981}, "val": {"accuracy": 0.98}},
              _meta("mfeat", num_blocks=2, sources=["pix", "fou"], target="digit")),
}


@pytest.fixture()
def workdirs(tmp_path):
    root = tmp_path / "runs"
    for name, (splits, meta) in RUNS.items():
        d = root / name
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({**splits, "meta": meta}))
    (root / "no_results").mkdir()
    return root


def _run_main(tmp_path, workdirs_arg):
    out = tmp_path / "report"
    fv = flags.FlagValues()
    report.define_flags(fv)
    fv(["report", f"--workdirs={workdirs_arg}", f"--out={out}"])
    report.main(["report"], flag_values=fv)
    return out


def _csv(out, key):
    with open(out / f"{key}.csv") as f:
        return list(csv.DictReader(f))


def _row(rows, **match):
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def _cols(out, key):
    with open(out / f"{key}.csv") as f:
        return next(csv.reader(f))


def _values(out, key, **match):
    """A CSV row as a list in column order (the 'ours' columns share a name)."""
    with open(out / f"{key}.csv") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [r for r in reader
                if all(r[header.index(k)] == v for k, v in match.items())]
    assert len(rows) == 1, (match, rows)
    return rows[0]


def test_report_files_and_tables(tmp_path, workdirs):
    out = _run_main(tmp_path, f"{workdirs}/*,{workdirs}/nyu_mango_s0")
    for key in ("table1_segmentation", "table2_taskonomy", "table3_mmimdb", "table4_flow_layer",
                "table5_partitions", "table6_blocks_latent", "table8_cost", "runs"):
        assert (out / f"{key}.md").exists() and (out / f"{key}.csv").exists(), key
    combined = (out / "report.md").read_text()
    assert "Table 1" in combined and "Table 6" in combined and "All runs" in combined
    assert "no_results: no results.json" in combined

    # Table 1: MANGO = mean of the two main-config seeds; the paper's numbers beside.
    cols = _cols(out, "table1_segmentation")
    mango = _values(out, "table1_segmentation", Method="MANGO")
    assert mango[cols.index("NYUDv2 Pixel Acc. (%) paper")] == "81.5000"
    assert float(mango[cols.index("NYUDv2 Pixel Acc. (%) paper") + 1]) == pytest.approx(81.0)
    assert float(mango[cols.index("NYUDv2 mIoU (%) paper") + 1]) == pytest.approx(51.0)
    assert mango[cols.index("SUN RGB-D mIoU (%) paper")] == "54.1000"
    assert float(mango[cols.index("SUN RGB-D mIoU (%) paper") + 1]) == pytest.approx(40.0)
    assert "nyu_mango_s0" in mango[-1] and "nyu_mango_s1" in mango[-1]
    assert "nyu_glow" not in mango[-1]  # ablation runs stay out of the main comparison
    miou = cols.index("NYUDv2 mIoU (%) paper") + 1
    tiny = _values(out, "table1_segmentation", Method="TokenFusion (Tiny) [65]")
    assert float(tiny[miou]) == pytest.approx(44.44)
    gemini = _values(out, "table1_segmentation", Method="GeminiFusion (MiT-B5) [20]")
    assert float(gemini[miou]) == pytest.approx(46.66)
    # A TokenFusion run without a variant fits neither paper row: a row of its own.
    extra = _values(out, "table1_segmentation", Method="tokenfusion (ours only)")
    assert float(extra[miou]) == pytest.approx(45.55)
    # Rows without runs: the paper's number, our cell empty; '-' in the paper stays empty.
    fcn = _values(out, "table1_segmentation", Method="FCN-32s [30]")
    assert fcn[cols.index("NYUDv2 Pixel Acc. (%) paper")] == "60.0000" and fcn[miou] == ""
    dpl = _values(out, "table1_segmentation", Method="DPLNet [6]")
    assert dpl[cols.index("NYUDv2 Pixel Acc. (%) paper")] == ""
    md = (out / "table1_segmentation.md").read_text()
    assert "| MANGO | RGB+D | 81.5 | 81.0±1.4 |" in md
    assert "| FCN-32s [30] | RGB | 60.0 |  | 42.2 |" in md

    # Table 4: Glow's row holds the Glow run; MANGO's the main config.
    cols4 = _cols(out, "table4_flow_layer")
    glow = _values(out, "table4_flow_layer", Layer="Glow [21]")
    m4 = cols4.index("NYUDv2 mIoU (%) paper")
    assert glow[m4] == "53.0000" and float(glow[m4 + 1]) == pytest.approx(43.21)
    assert _values(out, "table4_flow_layer", Layer="Flow++ [15]")[m4 + 1] == ""
    # An old-format run (settings at the top of meta, partitions written for every layer).
    realnvp = _values(out, "table4_flow_layer", Layer="Coupling Layer (RealNVP) [5]")
    assert float(realnvp[m4 + 1]) == pytest.approx(39.87)

    # Table 5: partitions; a set the paper lacks gets its own row.
    cols5 = _cols(out, "table5_partitions")
    m5 = cols5.index("NYUDv2 mIoU (%) paper")
    only_mmca = _values(out, "table5_partitions", MMCA="✓", IMCA="", LICA="")
    assert only_mmca[m5] == "56.4000" and float(only_mmca[m5 + 1]) == pytest.approx(34.56)
    imca = _values(out, "table5_partitions", MMCA="", IMCA="✓", LICA="")
    assert imca[m5] == "" and float(imca[m5 + 1]) == pytest.approx(22.22)

    # Table 6: blocks x latent, plus the appendix's 16 blocks and our extra 4-block run (val).
    cols6 = _cols(out, "table6_blocks_latent")
    m6 = cols6.index("NYUDv2 mIoU (%) paper")
    b6 = _values(out, "table6_blocks_latent", **{"# Blocks": "6", "Latent model": "✗"})
    assert b6[m6] == "51.0000" and float(b6[m6 + 1]) == pytest.approx(33.33)
    b16 = _values(out, "table6_blocks_latent", **{"# Blocks": "16", "Latent model": "✓"})
    assert b16[m6] == "61.7000" and b16[m6 + 1] == ""
    b4 = _values(out, "table6_blocks_latent", **{"# Blocks": "4 (ours only)"})
    assert float(b4[m6 + 1]) == pytest.approx(11.11)
    b12 = _values(out, "table6_blocks_latent", **{"# Blocks": "12", "Latent model": "✓"})
    assert float(b12[m6 + 1]) == pytest.approx(51.0)

    # Table 3: MM-IMDB.
    rows3 = _csv(out, "table3_mmimdb")
    cols3 = _cols(out, "table3_mmimdb")
    m = _values(out, "table3_mmimdb", Method="MANGO")
    assert m[cols3.index("Micro F1 (%) paper")] == "71.7000"
    assert float(m[cols3.index("Micro F1 (%) paper") + 1]) == pytest.approx(65.43)
    assert float(m[cols3.index("Macro F1 (%) paper") + 1]) == pytest.approx(54.32)
    text = _values(out, "table3_mmimdb", Method="Text Network [70]")
    assert float(text[cols3.index("Micro F1 (%) paper") + 1]) == pytest.approx(50.0)
    assert _values(out, "table3_mmimdb", Method="Image Network [70]")[3] == ""
    assert _row(rows3, Method="gmu (ours only)")["Modality"] == "I+T"

    # Table 2: Taskonomy, KID x100, MAE / MSE x10, the FID gap to GeminiFusion.
    cols2 = _cols(out, "table2_taskonomy")
    t2 = _values(out, "table2_taskonomy", Task="Shade+Texture → RGB", Method="MANGO")
    assert float(t2[cols2.index("FID paper") + 1]) == pytest.approx(50.0)
    assert float(t2[cols2.index("KID (×10⁻²) paper") + 1]) == pytest.approx(1.23)
    gap = _values(out, "table2_taskonomy", Task="Shade+Texture → RGB",
                  Method="MANGO − GeminiFusion")
    assert gap[cols2.index("FID paper")] == "-1.7100"
    assert float(gap[cols2.index("FID paper") + 1]) == pytest.approx(-2.5)
    nrm = _values(out, "table2_taskonomy", Task="RGB+Shade → Normal", Method="MANGO")
    assert float(nrm[cols2.index("MAE (×10⁻¹) paper") + 1]) == pytest.approx(0.345)

    # Table 8: parameters in millions.
    cols8 = _cols(out, "table8_cost")
    t8 = _values(out, "table8_cost", Method="MANGO")
    assert t8[cols8.index("Params (M) paper")] == "72.9000"
    assert float(t8[cols8.index("Params (M) paper") + 1]) == pytest.approx(72.9)

    # The generic table has every run and split, including the mfeat demo.
    runs = _csv(out, "runs")
    assert len({r["workdir"] for r in runs}) == len(RUNS)
    mf = _row(runs, experiment="mfeat", split="test")
    assert float(mf["accuracy (%)"]) == pytest.approx(98.1)
    assert _row(runs, experiment="mfeat", split="val")["accuracy (%)"] == "98.0000"
    assert float(_row(runs, workdir=os.path.join(str(workdirs), "tx_mango"))["kid (×100)"]) \
        == pytest.approx(1.23)
    glow_row = _row(runs, workdir=os.path.join(str(workdirs), "nyu_glow"))
    assert (glow_row["flow layer"], glow_row["blocks"], glow_row["partitions"]) == \
        ("glow", "12", "")
    gemini_row = _row(runs, workdir=os.path.join(str(workdirs), "nyu_gemini"))
    assert (gemini_row["flow layer"], gemini_row["blocks"]) == ("", "12")  # config.num_layers
    old_row = _row(runs, workdir=os.path.join(str(workdirs), "nyu_mango_s1"))
    assert (old_row["flow layer"], old_row["partitions"]) == ("mango", "mmca+imca+lica")


def test_report_without_runs_shows_the_paper(tmp_path):
    out = _run_main(tmp_path, str(tmp_path / "nothing*"))
    mango = _values(out, "table1_segmentation", Method="MANGO")
    assert "59.2000" in mango and "54.1000" in mango
    assert "No run found." in (out / "runs.md").read_text()


def test_report_command_line(tmp_path, workdirs):
    out = tmp_path / "cli"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.report", f"--workdirs={workdirs}/nyu_*",
         f"--out={out}"], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "MANGO" in (out / "report.md").read_text()
    assert len(_csv(out, "runs")) == sum(len(s) for n, (s, _) in RUNS.items()
                                         if n.startswith("nyu_"))
