"""Which name differences the attach pass forgives between a lone record and the one person at its phone."""

from __future__ import annotations

import pytest

from careloop.identity.evidence import _one_char_confused


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("程欣琳", "陈欣琳"),  # surnames that sound alike (cheng / chen)
        ("王贵", "黄贵"),  # wang / huang
        ("江东柏", "江东波"),  # 柏 is also read bo
        ("玉林军", "王林军"),  # look-alike characters
    ],
)
def test_misheard_or_mistyped_names_are_forgiven(a: str, b: str) -> None:
    assert _one_char_confused(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("宋朋浩", "宋涵浩"),  # father and son: unrelated characters
        ("吕雨涵", "雷雨涵"),  # mother and child with one given name: surnames differ in sound
        ("王伟", "王伟"),  # the same name is not a confusion
        ("王伟", "王伟民"),  # different lengths
        ("李明华", "张明伟"),  # two characters differ
    ],
)
def test_relatives_and_other_names_are_not(a: str, b: str) -> None:
    assert not _one_char_confused(a, b)
