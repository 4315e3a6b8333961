"""coco-fid: subset, resize policy, blur sweep, cached reference statistics, agreement with torch-fidelity,
resume, torchrun sharding, reports. A small COCO-format set is written by the tests."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from dalle_eval.cli import main
from dalle_eval.coco import choose_subset, export_captions, find_coco, load_or_choose_subset
from dalle_eval.coco_fid import run_coco_fid
from dalle_eval.config import load_config
from dalle_eval.errors import DalleEvalError
from dalle_eval.fid import save_random_inception
from dalle_eval.fid_reference import prepare

N_IMAGES = 24


def _picture(i: int, w: int, h: int) -> Image.Image:
    rng = np.random.default_rng(i)
    im = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(4):
        x, y = rng.integers(0, w - 10), rng.integers(0, h - 10)
        d.ellipse((x, y, x + rng.integers(8, 30), y + rng.integers(8, 30)), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return im


def _write_coco(root: Path, n: int = N_IMAGES, ext: str = "jpg") -> Path:
    """The official 2014 layout: annotations/captions_val2014.json + val2014/*.{ext} of mixed sizes."""
    (root / "annotations").mkdir(parents=True)
    (root / "val2014").mkdir()
    images, anns = [], []
    for i in range(n):
        name = f"COCO_val2014_{i:012d}.{ext}"
        _picture(i, 80 + 8 * (i % 3), 60 + 10 * (i % 4)).save(root / "val2014" / name, quality=95)
        images.append({"id": 1000 + i, "file_name": name, "width": 80, "height": 60})
        for j in range(2 + i % 4):
            anns.append({"id": 50000 + 10 * i + j, "image_id": 1000 + i, "caption": f" picture {i} caption {j} "})
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return root


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return _write_coco(tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    return save_random_inception(tmp_path_factory.mktemp("inc") / "inception.pth")


def _cfg(tmp_path, *extra):
    return load_config(["tiny"], ["eval.resolution=32", "eval.fid_batch=8", f"eval.cache_dir={tmp_path / 'cache'}",
                                  "eval.n_captions=12", *extra])


def _copy_as_samples(prompts, folder: Path, transform=None, shuffle: int | None = None) -> Path:
    """'Another generator': a samples dir holding, for each prompt, its real image (optionally transformed);
    `shuffle`: seed to write the samples.jsonl rows in an order other than the files' path order."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in prompts:
        im = Image.open(p["image"]).convert("RGB")
        (transform(im) if transform else im).save(folder / f"{p['prompt_id']}_0.png")
        rows.append({"prompt_id": p["prompt_id"], "index": 0, "caption": p["caption"], "file": f"{p['prompt_id']}_0.png"})
    if shuffle is not None:
        np.random.default_rng(shuffle).shuffle(rows)
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_subset_is_seeded_saved_reused_and_exported(coco, tmp_path):
    captions, image_dir = find_coco(coco)
    assert captions.name == "captions_val2014.json" and image_dir.name == "val2014"
    a, b = choose_subset(captions, image_dir, 10, seed=0), choose_subset(captions, image_dir, 10, seed=0)
    assert a == b and len({p["image_id"] for p in a}) == 10  # one caption per image
    assert [p["prompt_id"] for p in choose_subset(captions, image_dir, 10, seed=1)] != [p["prompt_id"] for p in a]
    two = choose_subset(captions, image_dir, 10, seed=0, per_image=2)
    assert len(two) == 10 and len({p["image_id"] for p in two}) == 5
    assert all(p["caption"] == p["caption"].strip() for p in a)
    assert len(choose_subset(captions, image_dir, 1000, seed=0)) == N_IMAGES  # fewer images than asked: all
    # saved and reused; other inputs are refused by name
    first = load_or_choose_subset(coco, tmp_path, 10, 0)
    assert json.loads((tmp_path / "subset.json").read_text())["n"] == 10
    assert load_or_choose_subset(coco, tmp_path, 10, 0) == first
    with pytest.raises(DalleEvalError, match=r"seed: 0 -> 3"):
        load_or_choose_subset(coco, tmp_path, 10, 3)
    # exported captions are a subset file for another run (or generator)
    export_captions(first, tmp_path / "prompts.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    assert [x["prompt_id"] for x in lines] == [p["prompt_id"] for p in first] and set(lines[0]) == {"prompt_id", "caption", "image_id"}
    assert load_or_choose_subset(coco, tmp_path / "other", 99, 7, subset_file=tmp_path / "prompts.jsonl") == first


def test_resize_policy_center_crop_bicubic(coco, tmp_path):
    path = tmp_path / "wide.png"
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, 20:60] = 200  # the centre square is uniform: the crop keeps only it
    Image.fromarray(arr).save(path)
    out = prepare(path, 32)
    assert out.shape == (32, 32, 3) and (out == 200).all()
    same = tmp_path / "same.png"
    Image.fromarray(arr[:, 20:60][:32, :32]).save(same)
    assert (prepare(same, 32) == 200).all()  # already square at the resolution: untouched


@pytest.mark.slow  # FID/IS/KID over 60 images through two implementations: ~17 s
def test_agrees_with_torch_fidelity(coco, tmp_path, inception):
    """Same images, same Inception weights: FID, IS and KID equal torch-fidelity's calculate_metrics on the very
    samples folder. torch-fidelity reads a folder in sorted path order; IS splits and KID subsets depend on the
    order, so the samples.jsonl rows here are shuffled (row order != path order)."""
    import torch_fidelity

    cfg = _cfg(tmp_path, "eval.n_captions=12", "eval.blur_radii=[0]", "eval.kid=true", "eval.kid_subset_size=6",
               "eval.kid_subsets=20")
    prompts = load_or_choose_subset(coco, tmp_path / "run", 12, 0)
    gray32 = lambda im: im.rotate(90).convert("L").convert("RGB").resize((32, 32), Image.Resampling.BICUBIC)
    samples = _copy_as_samples(prompts, tmp_path / "gen", transform=gray32, shuffle=3)
    rows = [json.loads(x)["file"] for x in (samples / "samples.jsonl").read_text().splitlines()]
    assert rows != sorted(rows)
    ours = run_coco_fid(coco, tmp_path / "run", cfg, images=samples, inception_weights=inception, progress=False)
    # the real images have mixed sizes: torch-fidelity gets our prepared (cropped, resized) copies, same names
    (tmp_path / "real").mkdir()
    for p in {p["image"] for p in prompts}:
        Image.fromarray(prepare(Path(p), 32)).save(tmp_path / "real" / f"{Path(p).stem}.png")
    ref = torch_fidelity.calculate_metrics(
        input1=str(samples), input2=str(tmp_path / "real"), fid=True, isc=True, kid=True, cache=False,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(inception), kid_subset_size=6,
        kid_subsets=20, verbose=False, batch_size=8, cuda=False, save_cpu_ram=True)
    assert ours["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-4)
    assert ours["is_mean"] == pytest.approx(ref["inception_score_mean"], rel=1e-4)
    assert ours["is_std"] == pytest.approx(ref["inception_score_std"], rel=1e-4, abs=1e-6)
    assert ours["sweep"][0]["kid_mean"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-4)
    assert ours["sweep"][0]["kid_std"] == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-4)


@pytest.mark.slow  # 5 blur radii x 2 sets through Inception: ~18 s
def test_identical_sets_blur_sweep_cache_and_report(coco, tmp_path, inception, monkeypatch):
    assert list(load_config([], []).eval.blur_radii) == [0, 1, 2, 4, 8]  # the paper's sweep is the default
    cfg = _cfg(tmp_path, "eval.n_captions=8", "eval.blur_radii=[0,2,8]")  # (3 radii: Inception passes are slow on CPU)
    prompts = load_or_choose_subset(coco, tmp_path / "run", 8, 0)
    samples = _copy_as_samples(prompts, tmp_path / "gen")
    first = run_coco_fid(coco, tmp_path / "run", cfg, images=samples, inception_weights=inception, progress=False)
    assert [s["blur_radius"] for s in first["sweep"]] == [0, 2, 8]
    assert all(abs(s["fid"]) < 1e-3 for s in first["sweep"])  # the same images at every radius: FID stays ~0
    assert all(not s["reference_cached"] for s in first["sweep"]) and len(list((tmp_path / "cache").glob("*.npz"))) == 3
    # second run: the real statistics come from the cache, the real images are not even opened
    import dalle_eval.fid_reference as ref

    opened = []
    real_prepare = ref.prepare
    monkeypatch.setattr(ref, "prepare", lambda p, res: opened.append(Path(p)) or real_prepare(p, res))
    second = run_coco_fid(coco, tmp_path / "run", cfg, images=samples, inception_weights=inception, progress=False)
    assert all(s["reference_cached"] for s in second["sweep"]) and all(p.parent == samples for p in opened)
    assert [s["fid"] for s in second["sweep"]] == pytest.approx([s["fid"] for s in first["sweep"]], abs=1e-9)
    # another image list is another key
    other = run_coco_fid(coco, tmp_path / "run2", _cfg(tmp_path, "eval.n_captions=6", "eval.blur_radii=[0]"),
                         images=samples, inception_weights=inception, progress=False)
    assert not other["sweep"][0]["reference_cached"]
    md = (tmp_path / "run" / "report.md").read_text()
    assert "published" in md.lower() and "27.5" in md and "center crop" in md and (tmp_path / "run" / "fid_is_vs_blur.png").exists()
    assert second["protocol"]["rerank"] == "not recorded"  # rows from another generator do not record it


def _change_one_pixel(path: Path, y: int, x: int) -> None:
    """Invert one pixel of an uncompressed BMP: same name, same byte size; then set its mtime back."""
    st = path.stat()
    arr = np.asarray(Image.open(path).convert("RGB")).copy()
    arr[y, x] = 255 - arr[y, x]
    Image.fromarray(arr).save(path, format="BMP")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


@pytest.mark.slow  # reference statistics computed 4 times: ~13 s
def test_reference_cache_is_keyed_by_content(tmp_path, inception):
    """The cached real statistics follow the images' bytes: one changed pixel (same name, byte size and
    mtime) is a new key; unchanged files reuse the cache without re-hashing; --verify-cache re-hashes all."""
    coco = _write_coco(tmp_path / "coco", n=8, ext="bmp")
    prompts = load_or_choose_subset(coco, tmp_path / "run", 6, 0)
    samples = _copy_as_samples(prompts, tmp_path / "gen")  # the real images themselves: FID ~ 0
    args = ["coco-fid", "--coco", str(coco), "--images", str(samples), "--out", str(tmp_path / "run"),
            "--inception-weights", str(inception), "--set", "eval.n_captions=6", "--set", "eval.blur_radii=[0]",
            "--set", "eval.resolution=32", "--set", f"eval.cache_dir={tmp_path / 'cache'}"]

    def run(*extra) -> dict:
        r = CliRunner().invoke(main, [*args, *extra])
        assert r.exit_code == 0, r.output
        report = json.loads((tmp_path / "run" / "report.json").read_text())
        images = report.get("reference_images", {})  # how the cache was checked
        return {"fid": report["sweep"][0].get("fid_raw", report["fid"]), "hit": report["sweep"][0]["reference_cached"],
                "hashed": images.get("files_hashed"), "sha": images.get("sha256")}

    first = run()
    assert not first["hit"] and abs(first["fid"]) < 1e-3
    again = run()  # same files: the cached statistics
    assert again["hit"] and again["fid"] == first["fid"]
    changed = Path(prompts[2]["image"])
    _change_one_pixel(changed, 5, 7)
    after = run()
    assert not after["hit"] and after["fid"] != first["fid"]  # recomputed (one pixel in 6 images: a tiny FID)
    mus = [np.load(f)["mu"] for f in (tmp_path / "cache").glob("ref-*.npz")]
    assert len(mus) == 2 and np.abs(mus[0] - mus[1]).max() > 1e-6  # new statistics (max |d mu| 1.4e-5), beside the old
    assert (first["hashed"], again["hashed"], after["hashed"]) == (6, 0, 1)  # unchanged files are not re-read
    assert after["sha"] != first["sha"] == again["sha"]
    # a change no stat can see (a forged index stands for it): only --verify-cache re-reads every file
    _change_one_pixel(changed, 9, 3)
    index = next((tmp_path / "cache").glob("files-*.json"))
    files = json.loads(index.read_text())["files"]
    files[os.path.realpath(changed)]["stat"] = [changed.stat().st_size, changed.stat().st_mtime_ns, changed.stat().st_ctime_ns]
    index.write_text(json.dumps({"files": files}))
    assert run()["sha"] == after["sha"]  # trusted by stat: the cheap check cannot know
    verified = run("--verify-cache")
    assert verified["hashed"] == 6 and not verified["hit"] and verified["sha"] not in (first["sha"], after["sha"])
    assert len(list((tmp_path / "cache").glob("ref-*.npz"))) == 3 and verified["fid"] != after["fid"]


RAW_ORACLE_FID = -3.3e-7  # what an oracle (generated = real) measured in test_reference_cache_is_keyed_by_content


@pytest.fixture(scope="module")
def other_generator_run(coco, tmp_path_factory):
    """`coco-fid --images DIR --random-inception` on another generator's samples dir (rows record no sampling
    settings), the samples being the real images (an oracle) whose FID comes out a hair below 0 from round-off."""
    import dalle_eval.coco_fid as cf

    tmp = tmp_path_factory.mktemp("other")
    prompts = load_or_choose_subset(coco, tmp / "run", 6, 0)
    samples = _copy_as_samples(prompts, tmp / "their_samples")
    args = ["coco-fid", "--coco", str(coco), "--images", str(samples), "--out", str(tmp / "run"), "--random-inception",
            "--set", "eval.n_captions=6", "--set", "eval.blur_radii=[0,2]", "--set", "eval.resolution=32",
            "--set", f"eval.cache_dir={tmp / 'cache'}"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cf, "frechet_distance_to_features", lambda *a: RAW_ORACLE_FID)
        r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    out = tmp / "run"
    return {"output": r.output, "md": (out / "report.md").read_text(), "json": json.loads((out / "report.json").read_text()),
            "plot": out / "fid_is_vs_blur.png", "samples": samples}


def test_oracle_fid_prints_zero_and_keeps_the_raw_value(other_generator_run):
    """FID is a squared distance (>= 0): a round-off value below 0 is reported as 0, never '-0.000'."""
    md, out, report = other_generator_run["md"], other_generator_run["output"], other_generator_run["json"]
    assert "-0.000" not in md and "-0.000" not in out
    assert "| 0.000 |" in md and "FID 0.000" in out
    assert report["fid"] == 0.0 and all(s["fid"] == 0.0 and s["fid_raw"] == RAW_ORACLE_FID for s in report["sweep"])


def test_report_on_another_generator_says_what_is_known(other_generator_run):
    md, out, report = other_generator_run["md"], other_generator_run["output"], other_generator_run["json"]
    for text in (md, out):
        assert "unknown" not in text.lower() and "None" not in text
    assert f"Images from `{other_generator_run['samples']}`; sampling settings (reranking, temperature) not recorded" in md
    assert report["protocol"]["rerank"] == report["protocol"]["temperature"] == "not recorded"


def test_random_inception_caveat_on_plot_and_report(other_generator_run):
    from dalle_eval.coco_report import CAVEAT_RANDOM, sweep_figure

    assert CAVEAT_RANDOM == "random Inception weights: not comparable to published FID"
    md = other_generator_run["md"].lower()
    assert md.index(CAVEAT_RANDOM.lower()) < md.index("| blur radius")  # above the numbers
    assert other_generator_run["json"]["protocol"]["random_inception"]
    with Image.open(other_generator_run["plot"]) as im:
        assert CAVEAT_RANDOM in im.text.get("Description", "")
    sweep = other_generator_run["json"]["sweep"]
    titles = lambda caveat: " ".join(t.get_text().lower() for t in sweep_figure(sweep, caveat).texts)
    assert CAVEAT_RANDOM.lower() in titles(CAVEAT_RANDOM) and CAVEAT_RANDOM.lower() not in titles(None)


@pytest.mark.slow  # a blur sweep through Inception: ~6 s
def test_blurred_generated_set_gets_closer_with_blur(coco, tmp_path, inception):
    cfg = _cfg(tmp_path, "eval.n_captions=8", "eval.blur_radii=[0,8]")
    prompts = load_or_choose_subset(coco, tmp_path / "run", 8, 0)
    from PIL import ImageFilter

    samples = _copy_as_samples(prompts, tmp_path / "gen", transform=lambda im: im.filter(ImageFilter.GaussianBlur(3)))
    r = run_coco_fid(coco, tmp_path / "run", cfg, images=samples, inception_weights=inception, progress=False)
    fids = [s["fid"] for s in r["sweep"]]
    assert fids[0] > fids[-1] >= 0  # blurring both sets hides the generator's blur


def test_errors_name_the_file(coco, tmp_path, inception):
    cfg = _cfg(tmp_path, "eval.n_captions=6", "eval.blur_radii=[0]")
    prompts = load_or_choose_subset(coco, tmp_path / "run", 6, 0)
    samples = _copy_as_samples(prompts, tmp_path / "gen")
    (samples / f"{prompts[3]['prompt_id']}_0.png").write_bytes(b"<html>not an image</html>")
    with pytest.raises(DalleEvalError, match=f"{prompts[3]['prompt_id']}_0.png: unreadable image"):
        run_coco_fid(coco, tmp_path / "run", cfg, images=samples, inception_weights=inception, progress=False)
    rows = (samples / "samples.jsonl").read_text().splitlines()
    (samples / "samples.jsonl").write_text("\n".join(rows[:-2]) + "\n")
    with pytest.raises(DalleEvalError, match="2 of the 6 subset prompts have no image"):
        run_coco_fid(coco, tmp_path / "run", cfg, images=samples, inception_weights=inception, progress=False)
    with pytest.raises(DalleEvalError, match="no captions_val"):
        run_coco_fid(tmp_path, tmp_path / "run", cfg, images=samples, inception_weights=inception, progress=False)
    with pytest.raises(DalleEvalError, match="inception-weights .*file not found"):
        run_coco_fid(coco, tmp_path / "run", cfg, images=_copy_as_samples(prompts, tmp_path / "ok"),
                     inception_weights=tmp_path / "nope.pth", progress=False)


def test_generation_resumes_after_a_crash(shapes_data, transformer_ckpt, tmp_path, inception, monkeypatch):
    import dalle_eval.generate as gen

    cfg = load_config(["tiny"], ["eval.n_captions=6", "eval.fid_batch=6", "sample.batch_size=2", "eval.blur_radii=[0]",
                                 f"eval.cache_dir={tmp_path / 'cache'}"])
    real_write, calls = gen._write_prompt, []

    def crash_on_third(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")
        calls.append(a[0][0][0]["prompt_id"])
        return real_write(*a, **k)

    monkeypatch.setattr(gen, "_write_prompt", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_coco_fid(shapes_data / "coco", tmp_path / "run", cfg, ckpt=transformer_ckpt, inception_weights=inception, progress=False)
    done = [json.loads(x) for x in (tmp_path / "run" / "samples" / "samples.jsonl").read_text().splitlines()]
    assert [r["prompt_id"] for r in done] == calls
    monkeypatch.setattr(gen, "_write_prompt", real_write)
    drawn = []
    real_sample = gen.sample_codes
    monkeypatch.setattr(gen, "sample_codes", lambda m, text, seeds, *a, **k: drawn.extend(seeds) or real_sample(m, text, seeds, *a, **k))
    r = run_coco_fid(shapes_data / "coco", tmp_path / "run", cfg, ckpt=transformer_ckpt, inception_weights=inception, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "samples" / "samples.jsonl").read_text().splitlines()]
    assert sorted(r_["prompt_id"] for r_ in rows) == sorted(p["prompt_id"] for p in json.loads((tmp_path / "run" / "subset.json").read_text())["prompts"])
    assert len(drawn) == 4 and not {r_["seed"] for r_ in done} & set(drawn)  # only the 4 missing prompts were drawn
    assert r["protocol"]["n_generated"] == 6 and r["protocol"]["rerank"] == 1


def test_rerank_and_clip_score_through_the_cli(shapes_data, transformer_ckpt, tmp_path, inception, tiny_clip):
    model_cfg, weights = tiny_clip
    out = tmp_path / "run"
    args = ["coco-fid", "--coco", str(shapes_data / "coco"), "--ckpt", str(transformer_ckpt), "--out", str(out),
            "--rerank", "2", "--clip-model", model_cfg, "--clip-pretrained", weights, "--inception-weights", str(inception),
            "--set", "eval.n_captions=4", "--set", "eval.blur_radii=[0]", "--set", f"eval.cache_dir={tmp_path / 'c'}",
            "--set", "sample.batch_size=4", "--export-captions", str(tmp_path / "prompts.jsonl")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["rerank"] == 2 and "from reranking" in report["clip_model"]
    assert report["clip_score"] is not None and (out / "clip_best.png").exists() and (out / "clip_worst.png").exists()
    assert "best of 2 by CLIP" in (out / "report.md").read_text() and "blur 0" in r.output
    assert len((tmp_path / "prompts.jsonl").read_text().splitlines()) == 4
    r = CliRunner().invoke(main, ["coco-fid", "--coco", str(shapes_data / "coco"), "--out", str(tmp_path / "x"),
                                  "--export-captions", str(tmp_path / "only.jsonl"), "--set", "eval.n_captions=5"])
    assert r.exit_code == 0 and "exported to" in r.output and len((tmp_path / "only.jsonl").read_text().splitlines()) == 5


@pytest.mark.slow  # torchrun: 2 processes
def test_torchrun_two_ranks_generate_the_same_images(shapes_data, transformer_ckpt, tmp_path, inception):
    """Generation sharded over 2 gloo ranks = one process, image for image; rank 0 merges and reports."""
    common = ["--coco", str(shapes_data / "coco"), "--ckpt", str(transformer_ckpt), "--inception-weights", str(inception),
              "--set", "eval.n_captions=6", "--set", "eval.blur_radii=[0]", "--set", f"eval.cache_dir={tmp_path / 'c'}",
              "--set", "sample.batch_size=4"]
    assert CliRunner().invoke(main, ["coco-fid", "--out", str(tmp_path / "one"), *common]).exit_code == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dalle_eval.cli",
           "coco-fid", "--out", str(tmp_path / "two"), *common]
    p = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("== coco-fid ==") == 1
    one = {r["file"]: r for r in map(json.loads, (tmp_path / "one" / "samples" / "samples.jsonl").read_text().splitlines())}
    two = {r["file"]: r for r in map(json.loads, (tmp_path / "two" / "samples" / "samples.jsonl").read_text().splitlines())}
    assert one.keys() == two.keys() and not list((tmp_path / "two" / "samples").glob("samples.rank*"))
    for f in one:
        assert (tmp_path / "one" / "samples" / f).read_bytes() == (tmp_path / "two" / "samples" / f).read_bytes()
    a, b = (json.loads((tmp_path / d / "report.json").read_text())["fid"] for d in ("one", "two"))
    assert a == pytest.approx(b, rel=1e-6)
    shutil.rmtree(tmp_path / "two")
