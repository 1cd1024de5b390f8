"""Closed value sets of the domain. Storage keeps them as text; ingestion rejects unknown values."""

from enum import StrEnum


class Sex(StrEnum):
    MALE = "male"
    FEMALE = "female"
    OTHER = "other"
    UNKNOWN = "unknown"


class OrgType(StrEnum):
    HOSPITAL = "hospital"
    COMMUNITY_CLINIC = "community_clinic"
    INTERNET_HOSPITAL = "internet_hospital"
    PHARMACY = "pharmacy"
    DTP_PHARMACY = "dtp_pharmacy"
    PHARMA = "pharma"
    DEVICE_MAKER = "device_maker"
    PAYER = "payer"
    OTHER = "other"


class HospitalTier(StrEnum):
    """Hospital grade: 三甲 (tertiary A), 二级 (secondary), 基层 (primary / community)."""

    TERTIARY_A = "三甲"
    TERTIARY = "三级"
    SECONDARY = "二级"
    PRIMARY = "基层"


class DoctorTitle(StrEnum):
    CHIEF = "主任医师"
    ASSOCIATE_CHIEF = "副主任医师"
    ATTENDING = "主治医师"
    RESIDENT = "住院医师"
    OTHER = "其他"


class EncounterClass(StrEnum):
    OUTPATIENT = "outpatient"
    INPATIENT = "inpatient"
    EMERGENCY = "emergency"
    ONLINE = "online"  # online consultation (互联网诊疗)
    FOLLOW_UP = "follow_up"  # scheduled follow-up (随访)
    WELLNESS = "wellness"  # check-up (体检)
    HOME = "home"
    OTHER = "other"


class RxStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    STOPPED = "stopped"
    CANCELLED = "cancelled"


class DispenseChannel(StrEnum):
    HOSPITAL = "hospital"
    RETAIL = "retail"
    DTP = "dtp"
    ONLINE = "online"


class AppointmentStatus(StrEnum):
    BOOKED = "booked"
    ATTENDED = "attended"
    NO_SHOW = "no_show"
    CANCELLED = "cancelled"


class BookingChannel(StrEnum):
    WECHAT = "wechat"
    APP = "app"
    WEB = "web"
    PHONE = "phone"
    ONSITE = "onsite"
    REFERRAL = "referral"
    OTHER = "other"


class EventChannel(StrEnum):
    APP = "app"
    WECHAT_OA = "wechat_oa"  # official account (公众号)
    WECHAT_MP = "wechat_mp"  # mini-program (小程序)
    WEB = "web"
    CALL_CENTRE = "call_centre"
    SMS = "sms"
    EMAIL = "email"
    DEVICE = "device"
    OTHER = "other"


class EventType(StrEnum):
    """Segment-spec call types."""

    TRACK = "track"
    PAGE = "page"
    SCREEN = "screen"
    IDENTIFY = "identify"
    GROUP = "group"
    ALIAS = "alias"


class ObservationSource(StrEnum):
    CLINIC = "clinic"
    LAB = "lab"
    DEVICE = "device"  # home devices: CGM, BP cuff
    SELF_REPORTED = "self_reported"


class ConsentStatus(StrEnum):
    GRANTED = "granted"
    WITHDRAWN = "withdrawn"
    REFUSED = "refused"


class ConsentPurpose(StrEnum):
    CARE_FOLLOW_UP = "care_follow_up"
    SERVICE = "service"
    MARKETING = "marketing"
    RESEARCH = "research"
    THIRD_PARTY_SHARING = "third_party_sharing"
    PERSONALISATION = "personalisation"


class MessageChannel(StrEnum):
    SMS = "sms"
    WECHAT = "wechat"
    APP_PUSH = "app_push"
    EMAIL = "email"
    PHONE_CALL = "phone_call"
    OUTBOX = "outbox"


class MessageStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    BLOCKED = "blocked"


class TouchType(StrEnum):
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    REPLIED = "replied"
    CONVERTED = "converted"
    OPTED_OUT = "opted_out"


class ConsultationMode(StrEnum):
    TEXT = "text"  # 图文
    PHONE = "phone"
    VIDEO = "video"


class Relationship(StrEnum):
    """Relationship of a household member to the household's reference person."""

    SELF = "self"
    SPOUSE = "spouse"
    CHILD = "child"
    PARENT = "parent"
    GRANDPARENT = "grandparent"
    GRANDCHILD = "grandchild"
    SIBLING = "sibling"
    OTHER = "other"


class IdentifierKind(StrEnum):
    HIS_NUMBER = "his_number"  # hospital patient number (病历号 / 门诊号)
    ID_NUMBER = "id_number"  # resident ID card (身份证)
    PHONE = "phone"
    OPENID = "openid"  # per WeChat app: system names the app
    UNIONID = "unionid"  # per WeChat developer account
    APP_USER_ID = "app_user_id"
    INSURANCE_NUMBER = "insurance_number"  # 医保卡号
    PASSPORT = "passport"
    BANK_CARD = "bank_card"
    EMAIL = "email"
    OTHER = "other"
