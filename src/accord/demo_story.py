"""The cast and script of ``accord demo``: two companies and one shared rollout thread (ArchAstro's
Agent Network example), and Acme's support triage network (its support-escalation example).

Pure data, plus the two models the story runs on:

* ``StoryModel`` — the offline default: deterministic, no network, every reply marked
  ``[offline model]``. Each agent says its next line of the story, but only when the knowledge passage
  that line relies on actually reached its prompt (retrieved by the routine worker from its own org's
  documents); otherwise it says it found nothing. So the offline story still exercises retrieval.
* ``Recorder`` — wraps whichever model runs (offline or a real endpoint) and keeps every request, so
  the demo can check what each agent's model was shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .agents.models.base import Model, ModelReply, ModelRequest

ACME = "Acme"
GLOBEX = "Globex"
SHARED_TEAM = "acme-rollout"
SHARED_THREAD = "rollout-status"
PRIVACY_QUERY = "webhook validation"


@dataclass(frozen=True, slots=True)
class Doc:
    title: str
    content: str


@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    lookup_key: str
    identity: str


@dataclass(frozen=True, slots=True)
class Company:
    name: str
    role: str  # "customer" | "partner"
    liaison: str  # the person who speaks for the company in the shared thread
    agent: AgentSpec  # the agent that speaks for it there
    private_team: str
    private_notes: tuple[tuple[str, str], ...]  # (thread title, the liaison's message in it)
    docs: tuple[Doc, ...]
    extra_people: tuple[str, ...] = ()
    extra_agents: tuple[AgentSpec, ...] = field(default=())


# --- seed 001: the shared rollout ------------------------------------------------------------------

ROLLOUT: tuple[tuple[str, str], ...] = (
    ("customer project lead", "We are ready to move the billing migration to production on Thursday."),
    (
        "Customer Ops Agent",
        "I checked the customer-side launch checklist. The remaining blocker is webhook validation.",
    ),
    ("partner delivery lead", "We can run that validation tomorrow morning."),
    (
        "Delivery Agent",
        "The partner rollout plan still shows one unresolved webhook retry issue. "
        "I recommend validating retries before the cutover window.",
    ),
)

# --- seed 000: the support escalation network ----------------------------------------------------------

TRIAGE = AgentSpec("Support Triage", "triage", "You classify support requests and route them to specialists.")
TECHNICAL = AgentSpec(
    "Technical Support",
    "tech-support",
    "You are a technical support specialist. Help with API errors, SDK issues, integration problems, "
    "and debugging.",
)
BILLING = AgentSpec(
    "Billing Support",
    "billing-support",
    "You are a billing specialist. Help with invoices, payment methods, plan changes, and refund requests.",
)
SUPPORT_TEAM = "Acme Support"
SUPPORT_THREADS = ("Intake", "Technical", "Billing")
CUSTOMER = "Initech customer"
# the seed's script, as written
TRIAGE_SCRIPT = """
const msg = event.payload.message;
const text = msg.text.toLowerCase();
const isBilling = text.includes("invoice") ||
text.includes("payment") ||
text.includes("billing");
return { route: isBilling ? "billing" : "technical" };
"""
SUPPORT_REQUESTS = (
    "I was charged twice for invoice INV-2291. Can you refund the duplicate payment?",
    "Our SDK calls started failing with HTTP 401 this morning.",
)

CHECKLIST = Doc(
    "Customer runbook: billing migration launch checklist",
    "Customer-side launch checklist for moving the billing migration to production. Done: SSO for the "
    "finance team, historical invoice export, payment method sync. Open: webhook validation, the "
    "remaining blocker before cutover; invoice.paid webhooks must reach the Acme ledger exactly once.",
)
REFUNDS = Doc(
    "Customer runbook: duplicate charges and refunds",
    "When a customer is charged twice for one invoice, refund the duplicate payment to the original "
    "payment method. Refunds settle in 5-7 business days. Quote the invoice number in the reply.",
)
API_ERRORS = Doc(
    "Customer runbook: API errors",
    "HTTP 401 from the Acme API means the API key expired or was revoked: rotate the key in the "
    "dashboard and restart the SDK client. HTTP 429 means rate limited: retry after Retry-After.",
)
ROLLOUT_NOTES = Doc(
    "Deployment notes: acme-rollout",
    "Partner rollout plan for Acme's billing migration: data migration rehearsed twice. One unresolved "
    "webhook retry issue: a retried webhook posts twice after a 502. Validation can run tomorrow "
    "morning on staging; validate retries before the cutover window.",
)

ACME_CO = Company(
    name=ACME,
    role="customer",
    liaison="customer project lead",
    agent=AgentSpec(
        "Customer Ops Agent",
        "customer-ops",
        "You are Acme's Customer Ops Agent. In the acme-rollout thread shared with our implementation "
        "partner Globex you report the customer-side status of the billing migration, from Acme's "
        "launch checklist and runbooks. Never reveal Acme's escalations or account notes there. "
        "Answer in at most two sentences.",
    ),
    private_team="Acme Customer Ops",
    private_notes=(
        (
            "billing-escalations",
            "Initech escalated two disputed invoices from the legacy billing system; "
            "finance must sign off before their migration.",
        ),
        (
            "internal-launch-checklist",
            "Launch checklist: SSO done, invoice export done, webhook validation open.",
        ),
    ),
    docs=(
        CHECKLIST,
        REFUNDS,
        API_ERRORS,
        Doc(
            "Account notes: Initech",
            "Initech is on the Enterprise plan, renewal in May. Sensitive: Initech disputed two March "
            "invoices from the legacy billing system and asked for a credit.",
        ),
    ),
    extra_people=(CUSTOMER,),
    extra_agents=(TRIAGE, TECHNICAL, BILLING),
)

GLOBEX_CO = Company(
    name=GLOBEX,
    role="partner",
    liaison="partner delivery lead",
    agent=AgentSpec(
        "Delivery Agent",
        "delivery",
        "You are Globex's Delivery Agent, the implementation partner on Acme's billing migration. In "
        "the shared acme-rollout thread you report the partner-side rollout status from Globex's "
        "rollout playbooks and deployment notes, and recommend next steps. Keep Globex's internal QA "
        "details private. Answer in at most two sentences.",
    ),
    private_team="Globex Delivery",
    private_notes=(
        (
            "partner-implementation",
            "The retry handler fix for Acme's webhooks is in review, not on staging yet.",
        ),
        ("internal-qa", "Staging webhook retry test fails about 1 run in 25; keep this internal."),
    ),
    docs=(
        Doc(
            "Rollout playbook: billing cutover",
            "Cutover windows are Thursdays 06:00-08:00 UTC. Before a cutover window, validate webhooks "
            "end to end, including retries: a retried webhook must never post twice.",
        ),
        ROLLOUT_NOTES,
        Doc(
            "Deployment notes: internal QA",
            "Internal only: the staging cluster is shared with two other customers; the QA flake rate "
            "was 4% this week.",
        ),
    ),
)


# --- the offline model -----------------------------------------------------------------------------------

OFFLINE_MARK = "[offline model]"
NOTHING_FOUND = "I found nothing about this in my organization's knowledge."

#: agent → its lines, in order, each with the title of the document it relies on
OFFLINE_LINES: dict[str, tuple[tuple[str, str], ...]] = {
    "Customer Ops Agent": ((CHECKLIST.title, ROLLOUT[1][1]),),
    "Delivery Agent": ((ROLLOUT_NOTES.title, ROLLOUT[3][1]),),
    "Billing Support": (
        (
            REFUNDS.title,
            "I see two payments for invoice INV-2291. I have refunded the duplicate to your original "
            "payment method; it settles in 5-7 business days.",
        ),
    ),
    "Technical Support": (
        (
            API_ERRORS.title,
            "A 401 means your API key expired or was revoked. Rotate it in the dashboard and restart "
            "the SDK client.",
        ),
    ),
}


class StoryModel:
    """Offline, deterministic, and says so: see the module docstring."""

    name = "offline"

    def __init__(self, lines: dict[str, tuple[tuple[str, str], ...]] | None = None) -> None:
        self._left = {agent: list(said) for agent, said in (lines or OFFLINE_LINES).items()}

    async def complete(self, request: ModelRequest) -> ModelReply:
        system = next(
            (str(m.get("content") or "") for m in request.messages if m.get("role") == "system"), ""
        )
        queue = self._left.get(request.agent_name, [])
        # the line is said only if the passage it relies on was retrieved into the prompt
        said = queue.pop(0)[1] if queue and queue[0][0] in system else NOTHING_FOUND
        text = f"{OFFLINE_MARK} {said}"
        tokens_in = sum(len(str(m.get("content") or "").split()) for m in request.messages)
        return ModelReply(text=text, model=self.name, tokens_in=tokens_in, tokens_out=len(text.split()))


class Recorder:
    """A model (and its own config) that passes every request on and keeps it, by agent name."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.name = model.name
        self.requests: dict[str, list[ModelRequest]] = {}

    def create(self) -> Model:
        return self

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.setdefault(request.agent_name, []).append(request)
        return await self.model.complete(request)

    def shown_to(self, agent_name: str) -> str:
        """Everything ``agent_name``'s model was shown, as one text."""
        return "\n".join(
            str(m.get("content") or "") for r in self.requests.get(agent_name, []) for m in r.messages
        )
