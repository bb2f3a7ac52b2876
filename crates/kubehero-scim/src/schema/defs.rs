//! The attribute definitions KubeHero stores (RFC 7643 §2.2 characteristics, §4 and §8.7 schemas): the one
//! table the `/Schemas` documents, validation, PATCH, projection and case rules are all derived from.
//!
//! Only attributes the server keeps faithfully are here. `id` and `meta` are listed for the rules above but
//! not advertised in `/Schemas` (they are common attributes, RFC 7643 §3.1); `externalId` is advertised so that
//! clients which build their attribute list from `/Schemas` see it.

/// `type` of an attribute (RFC 7643 §2.3); only the types KubeHero uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttrType {
    String,
    Boolean,
    Complex,
    Reference,
    DateTime,
}

impl AttrType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Boolean => "boolean",
            Self::Complex => "complex",
            Self::Reference => "reference",
            Self::DateTime => "dateTime",
        }
    }
}

/// `mutability` (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    // Part of the RFC vocabulary; no stored attribute is write-only (there is no `password`).
    #[allow(dead_code)]
    WriteOnly,
}

impl Mutability {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "readOnly",
            Self::ReadWrite => "readWrite",
            Self::Immutable => "immutable",
            Self::WriteOnly => "writeOnly",
        }
    }
}

/// `returned` (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Returned {
    Always,
    Default,
    // `never` and `request` are honoured by projection; no stored attribute uses them yet.
    #[allow(dead_code)]
    Never,
    #[allow(dead_code)]
    Request,
}

impl Returned {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Default => "default",
            Self::Never => "never",
            Self::Request => "request",
        }
    }
}

/// `uniqueness` (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Uniqueness {
    None,
    Server,
    // Part of the RFC vocabulary; ids are unique per server, nothing is unique globally.
    #[allow(dead_code)]
    Global,
}

impl Uniqueness {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Server => "server",
            Self::Global => "global",
        }
    }
}

/// One attribute or sub-attribute.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttrDef {
    pub name: &'static str,
    pub ty: AttrType,
    pub multi_valued: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub description: &'static str,
    pub sub_attributes: &'static [AttrDef],
    pub canonical_values: &'static [&'static str],
    /// Only the canonical values are accepted (stored in their canonical spelling).
    pub closed_values: bool,
    pub reference_types: &'static [&'static str],
    /// Listed in `/Schemas`.
    pub advertised: bool,
    /// Kept by validation. A non-stored attribute is accepted on input and dropped, because the server derives
    /// it (`members.$ref` is always `{base}/Users/{value}`).
    pub stored: bool,
}

const fn attr(name: &'static str, ty: AttrType, description: &'static str) -> AttrDef {
    AttrDef {
        name,
        ty,
        multi_valued: false,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        returned: Returned::Default,
        uniqueness: Uniqueness::None,
        description,
        sub_attributes: &[],
        canonical_values: &[],
        closed_values: false,
        reference_types: &[],
        advertised: true,
        stored: true,
    }
}

const fn string(name: &'static str, description: &'static str) -> AttrDef {
    attr(name, AttrType::String, description)
}

impl AttrDef {
    const fn multi(mut self) -> Self {
        self.multi_valued = true;
        self
    }
    const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    const fn case_exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    const fn read_only(mut self) -> Self {
        self.mutability = Mutability::ReadOnly;
        self
    }
    const fn immutable(mut self) -> Self {
        self.mutability = Mutability::Immutable;
        self
    }
    const fn always(mut self) -> Self {
        self.returned = Returned::Always;
        self
    }
    const fn unique(mut self, uniqueness: Uniqueness) -> Self {
        self.uniqueness = uniqueness;
        self
    }
    const fn subs(mut self, subs: &'static [AttrDef]) -> Self {
        self.sub_attributes = subs;
        self
    }
    const fn canonical(mut self, values: &'static [&'static str]) -> Self {
        self.canonical_values = values;
        self
    }
    const fn closed(mut self) -> Self {
        self.closed_values = true;
        self
    }
    const fn refs(mut self, types: &'static [&'static str]) -> Self {
        self.reference_types = types;
        self
    }
    const fn hidden(mut self) -> Self {
        self.advertised = false;
        self
    }
    const fn derived(mut self) -> Self {
        self.stored = false;
        self
    }

    pub(crate) fn is_complex(&self) -> bool {
        self.ty == AttrType::Complex
    }

    pub(crate) fn is_read_only(&self) -> bool {
        self.mutability == Mutability::ReadOnly
    }

    /// The sub-attribute called `name`, matched case-insensitively (RFC 7643 §2.1).
    pub(crate) fn sub(&self, name: &str) -> Option<&'static AttrDef> {
        find(self.sub_attributes, name)
    }
}

/// The attribute called `name` in `attrs`, matched case-insensitively (RFC 7643 §2.1).
pub(crate) fn find(attrs: &'static [AttrDef], name: &str) -> Option<&'static AttrDef> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// A schema (RFC 7643 §7).
#[derive(Debug)]
pub(crate) struct SchemaDef {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub attributes: &'static [AttrDef],
}

impl SchemaDef {
    pub(crate) fn attr(&self, name: &str) -> Option<&'static AttrDef> {
        find(self.attributes, name)
    }
}

const ID: AttrDef = string("id", "Unique identifier for the SCIM resource as defined by the service provider.")
    .read_only()
    .always()
    .case_exact()
    .unique(Uniqueness::Server)
    .hidden();

const EXTERNAL_ID: AttrDef =
    string("externalId", "An identifier for the resource as defined by the provisioning client.").case_exact();

const META_SUBS: &[AttrDef] = &[
    string("resourceType", "The name of the resource type of the resource.").read_only().case_exact(),
    attr("created", AttrType::DateTime, "The date and time the resource was added to the service provider.")
        .read_only(),
    attr("lastModified", AttrType::DateTime, "The most recent date and time the resource was updated.").read_only(),
    attr("location", AttrType::Reference, "The URI of the resource being returned.").read_only().case_exact(),
    string("version", "The version (entity tag) of the resource.").read_only().case_exact(),
];

const META: AttrDef = attr("meta", AttrType::Complex, "Resource metadata, maintained by the service provider.")
    .read_only()
    .subs(META_SUBS)
    .hidden();

const NAME_SUBS: &[AttrDef] = &[
    string("formatted", "The full name, including all middle names, titles, and suffixes, formatted for display."),
    string("familyName", "The family name of the User, or last name in most Western languages."),
    string("givenName", "The given name of the User, or first name in most Western languages."),
    string("middleName", "The middle name(s) of the User."),
    string("honorificPrefix", "The honorific prefix(es) of the User, or title in most Western languages."),
    string("honorificSuffix", "The honorific suffix(es) of the User, or suffix in most Western languages."),
];

const EMAIL_SUBS: &[AttrDef] = &[
    string("value", "Email address for the User."),
    string("display", "A human-readable name, primarily used for display purposes."),
    string("type", "A label indicating the email's function, e.g., 'work' or 'home'.")
        .canonical(&["work", "home", "other"]),
    attr(
        "primary",
        AttrType::Boolean,
        "Whether this is the primary email address. The value true appears no more than once.",
    ),
];

const USER_GROUP_SUBS: &[AttrDef] = &[
    string("value", "The identifier of the User's group.").read_only().case_exact(),
    attr("$ref", AttrType::Reference, "The URI of the corresponding Group resource.")
        .read_only()
        .case_exact()
        .refs(&["Group"]),
    string("display", "A human-readable name, primarily used for display purposes.").read_only(),
    string("type", "How the membership is derived: 'direct' or 'indirect'.")
        .read_only()
        .canonical(&["direct", "indirect"]),
];

const USER_ATTRS: &[AttrDef] = &[
    ID,
    EXTERNAL_ID,
    META,
    string("userName", "Unique identifier for the User, typically used by the user to authenticate.")
        .required()
        .unique(Uniqueness::Server),
    attr("name", AttrType::Complex, "The components of the user's real name.").subs(NAME_SUBS),
    string("displayName", "The name of the User, suitable for display to end-users."),
    string("nickName", "The casual way to address the user in real life."),
    string("title", "The user's title, such as 'Vice President'."),
    string("userType", "The relationship between the organization and the user, e.g., 'Employee'."),
    string("preferredLanguage", "The User's preferred written or spoken language, e.g., 'en-US'."),
    string("locale", "The User's default location for localization, e.g., 'en-US'."),
    string("timezone", "The User's time zone in IANA format, e.g., 'America/Los_Angeles'."),
    attr("active", AttrType::Boolean, "The User's administrative status."),
    attr("emails", AttrType::Complex, "Email addresses for the User.").multi().subs(EMAIL_SUBS),
    attr("groups", AttrType::Complex, "The groups the User belongs to, maintained by the service provider.")
        .multi()
        .read_only()
        .subs(USER_GROUP_SUBS),
];

const MANAGER_SUBS: &[AttrDef] = &[
    string("value", "The id of the SCIM resource representing the User's manager.").case_exact(),
    attr("$ref", AttrType::Reference, "The URI of the SCIM resource representing the User's manager.")
        .read_only()
        .case_exact()
        .refs(&["User"]),
    string("displayName", "The displayName of the User's manager.").read_only(),
];

const ENTERPRISE_ATTRS: &[AttrDef] = &[
    string("employeeNumber", "Identifier assigned to a person, typically based on order of hire."),
    string("costCenter", "Identifies the name of a cost center."),
    string("organization", "Identifies the name of an organization."),
    string("division", "Identifies the name of a division."),
    string("department", "Identifies the name of a department."),
    attr("manager", AttrType::Complex, "The User's manager.").subs(MANAGER_SUBS),
];

const MEMBER_SUBS: &[AttrDef] = &[
    string("value", "The id of the User that is a member of this Group.").required().case_exact().immutable(),
    attr("$ref", AttrType::Reference, "The URI of the member resource.")
        .case_exact()
        .immutable()
        .refs(&["User"])
        .derived(),
    string("display", "A human-readable name for the member, primarily used for display purposes.").read_only(),
    string("type", "The type of the member resource. Only 'User' is supported.")
        .immutable()
        .canonical(&["User"])
        .closed(),
];

const GROUP_ATTRS: &[AttrDef] = &[
    ID,
    EXTERNAL_ID,
    META,
    string("displayName", "A human-readable name for the Group.").required(),
    attr("members", AttrType::Complex, "A list of members of the Group.").multi().subs(MEMBER_SUBS),
];

pub(crate) static USER: SchemaDef =
    SchemaDef { id: super::USER_SCHEMA, name: "User", description: "User Account", attributes: USER_ATTRS };

pub(crate) static ENTERPRISE_USER: SchemaDef = SchemaDef {
    id: super::ENTERPRISE_USER_SCHEMA,
    name: "EnterpriseUser",
    description: "Enterprise User",
    attributes: ENTERPRISE_ATTRS,
};

pub(crate) static GROUP: SchemaDef =
    SchemaDef { id: super::GROUP_SCHEMA, name: "Group", description: "Group", attributes: GROUP_ATTRS };
