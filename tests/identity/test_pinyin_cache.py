"""`to_pinyin` converts character by character from a cache unless a dictionary phrase changes a reading:
the result must equal pypinyin's own conversion of the whole name."""

from __future__ import annotations

import random

from pypinyin import lazy_pinyin

from careloop.identity.standardise import to_pinyin


def _reference(name: str) -> str:
    return "".join(lazy_pinyin(name)).replace(" ", "").lower()


def test_phrase_readings_are_kept() -> None:
    # 单于 (chanyu), 曾经 (cengjing) and 长孙 (zhangsun) read differently as phrases than as characters
    for name, expected in (("单于红", "chanyuhong"), ("曾经伟", "cengjingwei"), ("长孙无忌", "zhangsunwuji")):
        assert to_pinyin(name) == _reference(name) == expected
    assert to_pinyin("单红") == "danhong" and to_pinyin("曾伟") == "cengwei"  # their first readings


def test_same_as_pypinyin_on_random_names() -> None:
    rng = random.Random(5)
    han = [chr(c) for c in range(0x4E00, 0x9FA6)]
    common = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤单长乐国华明伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛超霞平刚桂"
    names = ["".join(rng.choices(common, k=rng.randint(2, 4))) for _ in range(20_000)]
    names += ["".join(rng.choices(han, k=rng.randint(1, 4))) for _ in range(5_000)]
    names += ["王a勇", "李 明", "Zhang三", "欧阳娜娜", "一二三四五六七八九十百千万亿"]
    assert [to_pinyin(n) for n in names] == [_reference(n) for n in names]
