"""The DuckDB pre-filter: every filter fires on its crafted row and only there (real DuckDB, real py3langid)."""

import json

import pandas as pd
import pytest
import tomllib
from dalle_eval.pipelines.prefilter import FILTERS, filter_counts, format_filter_counts, prefilter

from dalle_eval.config import Config, FilterConfig, config_from_dict, config_to_dict, load_config, to_toml
from dalle_eval.errors import DalleEvalError

COCO_CAPTION = "A man riding a wave on top of a surfboard."
# (url, caption, expected status), keys in this order
CRAFTED = [
    ("http://x/0.jpg", "a red car", "ok"),
    ("ftp://x/1.jpg", "a green boat on a river", "url_invalid"),
    ("http://x/2.jpg", "", "caption_empty"),
    ("http://x/3.jpg", "  \t \n ", "caption_empty"),
    ("http://x/4.jpg", "&nbsp;", "caption_empty"),
    ("http://x/5.jpg", None, "caption_empty"),
    ("http://x/6.jpg", "a photo \ufffd\ufffd of a boat", "caption_invalid"),
    ("http://x/7.jpg", "a bell\x07 on a door", "caption_invalid"),
    ("http://x/8.jpg", "cat", "caption_too_short"),
    ("http://x/9.jpg", "\U0001f431\U0001f431\U0001f431\U0001f431\U0001f431", "caption_too_short"),  # no words
    ("http://x/10.jpg", "a very long caption " * 500, "caption_too_long"),  # 10,000 characters
    ("http://x/11.jpg", "Image may contain: one person, smiling", "boilerplate"),
    ("http://x/12.jpg", "IMG_20190612_123456.jpg", "boilerplate"),
    ("http://x/13.jpg", "Photographed on May 5, 2014 at the lake", "boilerplate"),
    ("http://x/14.jpg", "Ein roter Wagen parkt vor dem alten Haus", "not_english"),
    ("http://x/15.jpg", "一只猫坐在红色的沙发上", "not_english"),
    ("http://x/16.jpg", "Красная машина едет по улице", "not_english"),
    ("http://x/17.jpg", "a man riding a wave on top of a SURFBOARD", "eval_caption"),
    ("  http://x/0.jpg ", "a blue boat on a lake", "duplicate_url"),
    ("http://x/19.jpg", "A red car!", "duplicate_caption"),
    ("http://x/20.jpg", "Tom &amp; Jerry on a sofa \U0001f431", "ok"),
    ("http://x/21.jpg", "two dogs playing in the snow", "ok"),
]


def _table(rows, keys=None) -> pd.DataFrame:
    keys = keys or [f"{i:09d}" for i in range(len(rows))]
    return pd.DataFrame(
        {"key": keys, "url": [r[0] for r in rows], "caption": [r[1] for r in rows], "source": "t.csv"}
    )


@pytest.fixture
def coco_file(tmp_path):
    path = tmp_path / "captions_val2014.json"
    path.write_text(
        json.dumps(
            {"images": [{"id": 1}], "annotations": [{"image_id": 1, "id": 7, "caption": COCO_CAPTION}]}
        )
    )
    return path


def test_every_filter_fires_on_its_row_and_only_there(coco_file):
    pairs = _table(CRAFTED)
    table = prefilter(pairs, FilterConfig(), eval_captions=coco_file)
    assert table["status"].tolist() == [r[2] for r in CRAFTED]
    assert list(table.columns) == [
        "key",
        "url",
        "caption",
        "source",
        "status",
        "caption_norm",
        "lang",
        "lang_prob",
    ]
    assert table[["key", "url", "caption", "source"]].equals(pairs)  # same rows, same order
    counts = filter_counts(table)
    assert list(counts) == ["ok", *FILTERS] and sum(counts.values()) == len(pairs)
    assert all(counts[name] >= 1 for name in FILTERS)
    assert table.loc[20, "caption_norm"] == "tom jerry on a sofa"  # entity decoded, emoji and "&" dropped
    assert table.loc[14, "lang"] == "de" and table.loc[15, "lang"] == "zh" and table.loc[16, "lang"] == "ru"
    assert "total" in format_filter_counts(counts) and "duplicate_caption" in format_filter_counts(counts)


def test_first_filter_wins_and_skip_reveals_the_next(coco_file):
    caption = "Stock photo: eine rote Katze schläft auf dem Sofa im Wohnzimmer"
    coco_file.write_text(json.dumps({"annotations": [{"caption": caption}]}))
    pairs = _table([("http://x/a.jpg", caption), ("http://x/a.jpg", caption.upper() + "!")])
    skipped: tuple[str, ...] = ()
    for expected in (
        "boilerplate",
        "not_english",
        "eval_caption",
        "duplicate_url",
        "duplicate_caption",
        "ok",
    ):
        assert prefilter(pairs, FilterConfig(skip=skipped), coco_file)["status"].tolist()[1] == expected
        skipped += (expected,)


def test_duplicates_keep_the_first_surviving_copy_by_key():
    # keys out of input order: the smaller key is the first occurrence, the input order is kept
    pairs = _table(
        [("http://x/a.jpg", "a red car on a road"), ("http://x/a.jpg", "a blue car on a road")],
        ["000000005", "000000002"],
    )
    assert prefilter(pairs, FilterConfig())["status"].tolist() == ["duplicate_url", "ok"]
    # the first copy is rejected for another reason: the second one is kept, nothing good is lost
    pairs = _table(
        [("http://x/a.jpg", ""), ("http://x/a.jpg", "a red car"), ("http://x/b.jpg", "A red car.")]
    )
    assert prefilter(pairs, FilterConfig())["status"].tolist() == ["caption_empty", "ok", "duplicate_caption"]


def test_languages_short_english_kept_other_languages_rejected():
    english = [
        "a red car",
        "a dog",
        "sunset",
        "Kitchen interior",
        "Eiffel tower",
        "a bowl of soup",
        "Happy Birthday",
        "Machu Picchu",
        "croissant",
        "Mercedes-Benz",
        "bmw x5",
        "A MAN ON A HORSE",
        "two cats on a sofa",
        "a small café on a busy street",
        "Volkswagen Golf parked near the beach",
    ]
    other = [
        "Ein roter Wagen parkt vor dem alten Haus",
        "Die Katze schläft auf dem Sofa",
        "一只猫坐在红色的沙发上",
        "红色的汽车",
        "Красная машина едет по улице",
        "Кот на диване",
        "日本の古いお寺",
        "Ένα κόκκινο αυτοκίνητο",
    ]
    pairs = _table([(f"http://x/{i}.jpg", c) for i, c in enumerate(english + other)])
    statuses = prefilter(pairs, FilterConfig())["status"].tolist()
    assert statuses == ["ok"] * len(english) + ["not_english"] * len(other)
    german = prefilter(pairs, FilterConfig(languages=("de",)))["status"].tolist()
    assert german[len(english)] == "ok" and german[len(english) - 3] == "not_english"  # "two cats on a sofa"
    assert set(prefilter(pairs, FilterConfig(languages=()))["status"]) == {"ok"}


def test_eval_captions_from_a_text_file(tmp_path):
    path = tmp_path / "eval.txt"
    path.write_text("A Red Car!\n\nsomething else entirely\n")
    pairs = _table([("http://x/0.jpg", "a red car"), ("http://x/1.jpg", "a red cart")])
    assert prefilter(pairs, FilterConfig(), path)["status"].tolist() == ["eval_caption", "ok"]
    with pytest.raises(DalleEvalError, match="file not found"):
        prefilter(pairs, FilterConfig(), tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"images": []}')
    with pytest.raises(DalleEvalError, match=r"annotations\[\]\.caption"):
        prefilter(pairs, FilterConfig(), tmp_path / "bad.json")


@pytest.mark.parametrize(
    "cfg, message",
    [
        (FilterConfig(skip=("not_englsh",)), "unknown filter(s) not_englsh"),
        (FilterConfig(boilerplate=("(unclosed",)), "is not a valid RE2 regex"),
        (FilterConfig(languages=("english",)), "unknown code(s) english"),
    ],
)
def test_bad_filter_config_is_named(cfg, message):
    with pytest.raises(DalleEvalError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prefilter(_table(CRAFTED[:1]), cfg)


def test_filter_config_loads_and_round_trips(tmp_path):
    cfg = load_config(
        [], ['filter.skip=["not_english"]', 'filter.languages=["en", "de"]', "filter.min_chars=3"]
    )
    assert (
        cfg.filter.skip == ("not_english",)
        and cfg.filter.languages == ("en", "de")
        and cfg.filter.min_chars == 3
    )
    for c in (Config(), cfg):
        assert config_from_dict(tomllib.loads(to_toml(config_to_dict(c)))) == c  # regex backslashes survive
    assert prefilter(_table(CRAFTED), cfg.filter)["status"].tolist()[14:17] == ["ok"] * 3
