"""Message templates: sandboxed Jinja2, zh / en with fallback, SMS signature, opt-out and segment counting."""

from __future__ import annotations

from datetime import date

import pytest

from careloop.messaging.templates import (
    MessageTemplate,
    SmsRules,
    TemplateError,
    TemplateRenderer,
    complete_sms,
    count_sms,
    personalisation,
    pick_language,
    render,
)

REFILL = MessageTemplate.from_content(
    {
        "zh": "{{ name }}您好，您的{{ drug }}预计{{ run_out | date('%m月%d日') }}用完，请及时复诊取药。",
        "en": "Hi {{ name }}, your {{ drug }} runs out on {{ run_out | date('%d %b') }}. Please refill in time.",
    },
    name="refill",
)
SIGN = SmsRules(sign_name="仁济医院")


def variables(name: str = "张三", drug: str = "二甲双胍") -> dict[str, object]:
    return personalisation({"name": name, "language": "zh-CN"}, {"drug": drug, "run_out": date(2026, 11, 5)})


def test_personalised_sms_gets_signature_and_opt_out() -> None:
    msg = render(REFILL, variables(), kind="sms", language="zh-CN", sms=SIGN)
    assert msg.body == "【仁济医院】张三您好，您的二甲双胍预计11月05日用完，请及时复诊取药。回T退订"
    assert (msg.language, msg.length, msg.segments) == ("zh", 40, 1)


def test_english_variant_and_fallback() -> None:
    en = render(
        REFILL,
        variables("Zhang San", "metformin"),
        kind="sms",
        language="en-US",
        sms=SmsRules(sign_name="Renji"),
    )
    assert (
        en.body
        == "【Renji】Hi Zhang San, your metformin runs out on 05 Nov. Please refill in time. Reply T to opt out"
    )
    assert en.language == "en"
    only_zh = MessageTemplate({"zh": "请按时服药"})
    assert render(only_zh, {}, kind="app_push", language="en").language == "zh"  # falls back to the default
    only_en = MessageTemplate({"en": "Take your medicine"})
    assert render(only_en, {}, kind="app_push", language="zh").language == "en"  # then to what there is
    assert pick_language("ZH_hans", ["en", "zh"]) == "zh" and pick_language(None, ["en", "zh"], "en") == "en"


def test_existing_signature_and_opt_out_are_kept() -> None:
    assert (
        complete_sms("【社区卫生中心】请按时服药，拒收请回复R退订", "zh", SIGN)
        == "【社区卫生中心】请按时服药，拒收请回复R退订"
    )
    assert complete_sms("请按时服药。【社区卫生中心】", "zh", SIGN) == "请按时服药。回T退订【社区卫生中心】"
    assert complete_sms(
        "请按时服药", "zh", SmsRules(sign_name="【仁济医院】", opt_out={"zh": "退订回N"})
    ) == ("【仁济医院】请按时服药，退订回N")
    assert complete_sms("Your code is 1234", "en", SmsRules(sign_name="Renji", add_opt_out=False)) == (
        "【Renji】Your code is 1234"
    )
    assert complete_sms("Take your pills. Reply STOP to unsubscribe", "en", SIGN).endswith("unsubscribe")
    with pytest.raises(TemplateError, match="signature"):
        complete_sms("请按时服药", "zh", SmsRules())


def test_segment_counting_rules() -> None:
    assert count_sms("").segments == 0
    assert (count_sms("字" * 70).segments, count_sms("字" * 71).segments) == (1, 2)
    assert (count_sms("字" * 134).segments, count_sms("字" * 135).segments) == (2, 3)
    assert (
        count_sms("a" * 70).segments == 1 and count_sms("a" * 71).segments == 2
    )  # domestic: Latin counts the same
    assert count_sms("好😀").characters == 3  # outside the BMP: two
    gsm = count_sms("a" * 160, international=True)
    assert (gsm.encoding, gsm.segments) == ("gsm7", 1)
    assert count_sms("a" * 161, international=True).segments == 2
    assert count_sms("a" * 153 + "€", international=True).characters == 155
    assert count_sms("预约提醒", international=True).encoding == "ucs2"


def test_signature_and_opt_out_are_counted_and_long_bodies_refused() -> None:
    body = MessageTemplate({"zh": "字" * 62})
    msg = render(body, {}, kind="sms", sms=SIGN)  # 【仁济医院】 6 + 62 + ，回T退订 5 = 73
    assert (msg.length, msg.segments) == (73, 2)
    with pytest.raises(TemplateError, match=r"over the limit of 2.*70 characters.*67"):
        render(
            MessageTemplate({"zh": "字" * 200}),
            {},
            kind="sms",
            sms=SmsRules(sign_name="仁济医院", max_segments=2),
        )


def test_missing_variables_are_named() -> None:
    with pytest.raises(TemplateError, match=r"template refill \(zh\) uses `drug`.*default"):
        render(REFILL, {"name": "张三", "run_out": date(2026, 11, 5)}, kind="sms", sms=SIGN)
    nested = MessageTemplate({"zh": "{{ traits.pdc_statin }}"}, name="pdc")
    with pytest.raises(TemplateError, match="`pdc_statin`"):
        render(nested, personalisation({}, {}), kind="wechat")
    defaulted = MessageTemplate({"zh": "{{ name | default('患者') }}您好"})
    assert render(defaulted, {}, kind="wechat").body == "患者您好"


def test_the_sandbox_holds() -> None:
    for source in (
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{% set x = items.append(1) %}",
    ):
        with pytest.raises(TemplateError):
            render(MessageTemplate({"zh": source}), {"items": []}, kind="wechat")
    with pytest.raises(TemplateError, match="syntax error on line 1"):
        render(MessageTemplate({"zh": "{{ name "}), {}, kind="wechat")


def test_email_html_is_escaped_text_is_not() -> None:
    template = MessageTemplate.from_content(
        {
            "zh": "{{ name }}您好：检查结果 < 正常值",
            "subject_zh": "{{ name }}的复诊提醒",
            "html_zh": "<p>{{ name }}您好</p>",
            "en": "Hello",
        }
    )
    msg = render(template, {"name": "<b>张三</b>"}, kind="email")
    assert msg.subject == "<b>张三</b>的复诊提醒" and msg.body == "<b>张三</b>您好：检查结果 < 正常值"
    assert msg.html == "<p>&lt;b&gt;张三&lt;/b&gt;您好</p>"
    with pytest.raises(TemplateError, match="subject"):
        render(MessageTemplate({"zh": "x"}), {}, kind="email")
    with pytest.raises(TemplateError, match="not a language"):
        MessageTemplate.from_content({"zh": "x", "footer_text": "y"})


def test_renderer_defaults_and_cache() -> None:
    renderer = TemplateRenderer(
        default_language="en", sms=SmsRules(sign_name="Renji", opt_out={"en": "STOP to end"})
    )
    msg = renderer.render(REFILL, variables("Li", "insulin"), kind="sms", language="fr")
    assert msg.language == "en" and msg.body.endswith("in time. STOP to end")
    for _ in range(3):
        renderer.render(REFILL, variables(), kind="sms", language="zh")
    assert renderer._compile.cache_info().hits >= 2  # compiled once, reused
    with pytest.raises(TemplateError, match="kind"):
        renderer.render(REFILL, {}, kind="fax")
