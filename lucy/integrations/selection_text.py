"""Text normalisation for tool selection: tokens, a light stemmer, and query expansion.

People write Slack requests in their own words ("kill the deploy", "nuke the branch", "PR",
"mándale un correo"); Composio tools are described in API words ("cancel a workflow run",
"delete a reference", "pull request", "send email"). This module closes that gap with general
vocabulary of the domain, never with rules keyed to particular requests:

* :func:`tokens` folds case and accents, splits identifiers (``parseLegacyToken``,
  ``GITHUB_REPO_S_LIST``) and stems lightly, so "creating", "created" and "create" meet.
* :data:`LEXICON` maps everyday, chat and non-English words to the words tools use. An
  expansion is added next to the original word with a lower weight, so the original still
  counts and a wrong expansion only nudges.
* :func:`entity_words` turns shapes in the request (``owner/repo#12``, a commit sha, an email
  address, a URL, a time of day) into the words that describe them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_RUN = re.compile(r"[^\W_]+")
_IDENT_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD = re.compile(r"[a-z0-9]+")

def _split(text: str) -> list[str]:
    return text.split()


# Function words that carry no intent. Verbs like "get", "list", "show" are NOT here: they do.
STOPWORDS: frozenset[str] = frozenset(
    _split(
        """
    a an the of to in on at for from by with and or but is are was were be been being am it its this that
    these those i me my mine we us our you your he him his she her they them their there here as if so
    do does did done can could would should will shall may might must pls please plz thanks thank
    hey hi hello ok okay just also too very really rn asap now then than into onto about up out over via
    lucy some someone anyone anything something what whats who whos whom which when where why how s t
    im ive id youre thats dont doesnt didnt isnt wasnt cant wont
    el los las un una unos y o que del al por para con mi mis tu su sus es en de la lo le les des du une
    et ou dans sur pour avec mon ma mes ce cette qui est der die das den dem ein eine einen einem und
    oder mit auf fur von zu ist mein meine meinem meinen bitte noch e em um uma os meu minha da na no
    """
    )
)


def fold(text: str) -> str:
    """Lower-case and strip accents ("Änderungen" → "anderungen", "déplace" → "deplace")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def words(text: str) -> list[str]:
    """Folded alphanumeric words, stopwords kept (phrases need them).

    Identifiers that start in lower case split at their humps (``parseLegacyToken`` → parse
    legacy token); capitalised brand words stay whole (``LinkedIn``, ``GitHub``, ``YouTube``).
    """
    out: list[str] = []
    for run in _RUN.findall(text):
        parts = _IDENT_HUMP.split(run) if run[:1].islower() else [run]
        for part in parts:
            out.extend(_WORD.findall(fold(part)))
    return out


_DOUBLE = re.compile(r"([bdfgklmnprt])\1$")


def stem(word: str) -> str:
    """A light English suffix stripper (plural, -ing, -ed, final e).

    Deliberately weaker than Porter: tool vocabulary is small and precise, so conflating
    "update"/"updated"/"updates" matters but "organization"/"organ" must stay apart.
    """
    w = word
    if len(w) <= 3 or w.isdigit():
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if w.endswith("ing") and len(w) > 5:
        w = _DOUBLE.sub(r"\1", w[:-3])
    elif w.endswith("ied") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("ed") and len(w) > 4:
        w = _DOUBLE.sub(r"\1", w[:-2])
    if w.endswith("ation") and len(w) > 7:
        w = w[:-3]  # creation → creat(e), invitation → invit(e)
    elif w.endswith(("tion", "sion")) and len(w) > 7:
        w = w[:-3]  # deletion → delet(e)
    elif w.endswith("ment") and len(w) > 7:
        w = w[:-4]  # attachment → attach, assignment → assign
    elif w.endswith("al") and len(w) > 6 and w[-3] in "vt":
        w = w[:-2]  # approval → approv(e), removal → remov(e), retrieval → retriev(e)
    if w.endswith("e") and len(w) > 4:
        w = w[:-1]
    return w


def tokens(text: str) -> list[str]:
    """Stemmed content words of ``text`` (stopwords dropped), in order."""
    return [stem(w) for w in words(text) if w not in STOPWORDS]


# ---------------------------------------------------------------------------------------------
# The lexicon: surface form (a word or a phrase, folded) → words the tools use. Grouped by
# concept; every entry is about how people talk about apps, none about a particular request.
# EXACT entries are the same thing in other words (abbreviations, app nicknames, other
# languages); LOOSE entries are paraphrases that usually, not always, mean the target.
# A hyphen joins the words of a phrase; a phrase whose last word is a particle ("take-off")
# also matches with a few words between ("take jenny off the repo").
# ---------------------------------------------------------------------------------------------

EXACT = 0.9
LOOSE = 0.5
DATE = 0.3  # a day named in a request is often about the calendar, but not always ("since monday")

_GROUPS: list[tuple[float, str, str]] = [
    # --- actions ----------------------------------------------------------------------------
    (LOOSE, "create", "make new add open start spin setup file log raise build init generate cut "
     "spin-up set-up put write draft compose establish"),
    (LOOSE, "create webhook", "hook-up"),
    (LOOSE, "delete", "remove nuke trash kill drop erase wipe destroy rm del purge scrap discard "
     "get-rid take-down take-off bin ditch forget"),
    (LOOSE, "remove", "delete take-off pull-off kick unassign revoke strip drop"),
    (LOOSE, "update", "change edit modify rename set tweak adjust patch amend rewrite overwrite fix "
     "reschedule postpone move-to push-back push mark toggle switch enable disable turn-on turn-off "
     "close reopen resolve done complete finish check-off tick-off"),
    (LOOSE, "list", "which all every show any many count enumerate browse whats what overview last recent latest"),
    (LOOSE, "get", "show see view display check read fetch retrieve look-up pull grab tell details "
     "info status summarize summary open whats what"),
    (LOOSE, "search", "find look-for look-up locate query where mention mentioning lookup hunt dig"),
    (LOOSE, "send", "email mail message ping dm text write-to notify shoot msg"),
    (LOOSE, "reply", "respond answer get-back-to"),
    (EXACT, "forward", "fwd pass-on"),
    (LOOSE, "cancel", "stop abort halt kill terminate interrupt"),
    (EXACT, "re run", "rerun re-run retry restart re-trigger retrigger"),
    (LOOSE, "dispatch trigger run", "kick-off kickoff fire launch execute trigger run start"),
    (LOOSE, "merge", "squash rebase land"),
    (LOOSE, "review approve", "lgtm approve sign-off signoff request-changes"),
    (LOOSE, "request", "ask"),
    (LOOSE, "assign assignee", "plate owner give-to hand-to hand-off on-it"),
    (LOOSE, "share permission", "give-access grant invite access"),
    (LOOSE, "untrash restore", "recover undelete restore get-back bring-back"),
    (LOOSE, "copy duplicate", "clone copy duplicate replicate"),
    (LOOSE, "move", "relocate transfer put-in"),
    (LOOSE, "upload", "attach put-on"),
    (LOOSE, "download", "export save"),
    (LOOSE, "event create", "schedule book block"),
    (LOOSE, "memory add", "remember memorize note-that keep-in-mind"),
    (LOOSE, "scrape extract", "scrape extract crawl"),
    (LOOSE, "screenshot", "capture snapshot screencap"),
    # --- objects ----------------------------------------------------------------------------
    (EXACT, "pull request", "pr prs pull pulls mr merge-request"),
    (EXACT, "repository", "repo repos"),
    (LOOSE, "repository", "codebase project"),
    (LOOSE, "issue", "ticket bug tickets bugs"),
    (LOOSE, "comment", "note remark feedback reply discussion"),
    (LOOSE, "branch reference", "branch ref"),
    (LOOSE, "tag reference release", "tag tags version"),
    (LOOSE, "commit", "sha committed"),
    (LOOSE, "compare commit", "diff changed between"),
    (LOOSE, "workflow run action", "ci actions pipeline build job run runs flaky flaked"),
    (LOOSE, "deployment", "deploy deploys deployed prod production"),
    (LOOSE, "secret", "credential creds env-var token key"),
    (LOOSE, "webhook", "hook hooks callback"),
    (LOOSE, "gist", "snippet paste"),
    (LOOSE, "email message gmail", "mail inbox emails mails"),
    (LOOSE, "thread", "conversation convo"),
    (LOOSE, "contact people", "contacts address-book person"),
    (LOOSE, "event calendar", "meeting meetings invite appointment standup sync call lunch 1:1 one-on-one "
     "focus-time agenda"),
    (DATE, "event calendar date", "today tomorrow tonight yesterday monday tuesday wednesday thursday friday "
     "saturday sunday weekend next-week this-week"),
    (EXACT, "calendar", "cal"),
    (LOOSE, "attendee", "guest invitee participant"),
    (LOOSE, "free busy slot", "availability available free busy"),
    (EXACT, "document", "doc docs"),
    (LOOSE, "document", "memo writeup write-up"),
    (LOOSE, "spreadsheet", "sheet sheets"),
    (LOOSE, "folder", "directory dir"),
    (LOOSE, "file", "pdf deck slides attachment xlsx docx pptx csv"),
    (LOOSE, "attachment", "attached attach"),
    (LOOSE, "page", "wiki"),
    (EXACT, "database", "db"),
    (LOOSE, "database", "board tracker table"),
    (LOOSE, "row", "entry record item"),
    (LOOSE, "task", "todo to-do reminder chore"),
    (LOOSE, "subscriber statistic", "subs subscribers views"),
    (LOOSE, "insight statistic", "analytics reach engagement impressions metrics stats performance"),
    (LOOSE, "post", "tweet"),
    (LOOSE, "speech audio voice", "tts mp3 narrate narration voiceover"),
    (LOOSE, "video", "clip"),
    (LOOSE, "memory", "preference preferences"),
    (LOOSE, "webpage url", "site website link"),
    (LOOSE, "label", "tag category star"),
    (LOOSE, "collaborator member", "contributor teammate people access"),
    (LOOSE, "protection", "protected protect"),
    (LOOSE, "alert scanning security", "vulnerability vulnerabilities cve"),
    (LOOSE, "notification", "notifications unread mentions"),
    (LOOSE, "milestone", "sprint"),
    (EXACT, "log", "logs"),
    (EXACT, "organization", "org orgs"),
    (LOOSE, "organization", "company"),
    (LOOSE, "authenticated user", "me my mine myself"),
    # --- apps (how people name them) --------------------------------------------------------
    (EXACT, "github", "gh"),
    (EXACT, "facebook", "fb"),
    (EXACT, "instagram", "insta ig"),
    (EXACT, "youtube", "yt"),
    (EXACT, "googledrive", "gdrive"),
    (EXACT, "googledocs", "gdoc gdocs"),
    (EXACT, "googlecalendar", "gcal"),
    (EXACT, "elevenlabs", "11labs eleven-labs"),
    (EXACT, "perplexityai", "perplexity"),
    (EXACT, "browseai", "browse-ai"),
    # --- other languages: the everyday verbs and nouns of requests ---------------------------
    (EXACT, "create add", "erstellen erstelle anlegen lege eintragen trage hinzufugen fuge neu creer cree creez "
     "ajouter ajoute nouveau nouvelle crear crea creame agregar agrega anadir anade nuevo nueva criar "
     "adicionar"),
    (EXACT, "delete", "loschen losche entfernen entferne supprimer supprime effacer efface borrar borra "
     "eliminar elimina apagar"),
    (EXACT, "update", "andern andere aktualisieren bearbeiten modifier modifie changer cambiar cambia "
     "actualizar actualiza editar"),
    (EXACT, "send email", "senden sende schicken schick envoyer envoie envoyez enviar envia manda mandale "
     "mandar correo courriel"),
    (EXACT, "list get", "zeigen zeige anzeigen montrer montre affiche afficher mostrar muestra"),
    (EXACT, "search find", "suchen suche finden finde chercher cherche trouver trouve buscar busca encontrar"),
    (EXACT, "move", "verschieben verschiebe deplacer deplace mover mueve"),
    (EXACT, "share", "teilen teile partager partage compartir comparte"),
    (EXACT, "copy duplicate", "kopieren kopiere dupliquer duplique duplicar duplica"),
    (EXACT, "close update", "schliessen schliesse fermer ferme cerrar cierra"),
    (EXACT, "reopen update", "reabrir reabre rouvrir rouvre wiedereroffnen"),
    (EXACT, "event", "termin termine reunion rendez-vous cita"),
    (EXACT, "calendar", "kalender calendrier agenda calendario"),
    (EXACT, "folder", "ordner dossier carpeta pasta"),
    (EXACT, "file", "datei fichier archivo"),
    (EXACT, "message", "nachricht mensaje"),
    (EXACT, "task", "aufgabe tache tarea tarefa"),
    (EXACT, "comment", "kommentar commentaire comentario"),
    (EXACT, "page", "seite pagina"),
    (EXACT, "request changes review", "anderungen-anfordern"),
    (EXACT, "disable", "desactivar desactiva desactive desactivez desactiver deaktivieren deaktiviere ausschalten"),
    (EXACT, "enable", "activar activa activer aktivieren aktiviere einschalten"),
    (EXACT, "draft", "borrador borradores brouillon brouillons entwurf entwurfe"),
    (EXACT, "delivery", "livraison livraisons entrega entregas zustellung"),
    (EXACT, "label", "etiqueta etiquetas etiquette etiquettes"),
    (EXACT, "assign", "asignar asigna asignale assigner zuweisen"),
    (EXACT, "user", "usuario usuarios utilisateur utilisateurs benutzer nutzer"),
    (EXACT, "invite", "invitar invita inviter einladen"),
    (EXACT, "branch", "rama ramas zweig"),
    (EXACT, "merge", "fusionar fusiona fusionner fusionne mergen"),
    (EXACT, "reply", "responder responde repondre reponds antworten antworte"),
    (EXACT, "archive", "archivar archiva archiver archivieren"),
    (EXACT, "upload", "subir sube hochladen"),
    (EXACT, "read get", "leer lee lire lesen"),
    (EXACT, "list", "lista liste"),
    # --- more chat verbs ----------------------------------------------------------------------
    (LOOSE, "update", "bump retarget"),
    (LOOSE, "lock", "freeze"),
    (LOOSE, "unlock", "unfreeze thaw"),
    (LOOSE, "protection lock", "lock-down"),
    (LOOSE, "clear", "clean-out clear-out clean-up"),
    (LOOSE, "trash", "bin binned"),
    (LOOSE, "compare commit", "entre zwischen cambio cambios"),
    (EXACT, "milestone", "meilenstein hito jalon"),
    (EXACT, "create add", "neuer neue neues nueva nuevo"),
    (LOOSE, "instance", "occurrence occurrences recurrence recurring series"),
    (LOOSE, "search web", "online web internet google-it look-up-online"),
    (LOOSE, "assign assignee", "on-the-hook responsible"),
    (LOOSE, "event timeline", "history"),
    (LOOSE, "permission", "who-can can-see can-access can-view can-edit"),
    (LOOSE, "artifact", "report coverage-report build-output binary binaries bundle"),
    (LOOSE, "create add", "throw throw-on"),
]

PARTICLES: frozenset[str] = frozenset({"off", "on", "up", "down", "out", "back", "over", "in", "to"})
_MAX_GAP = 4  # words allowed between a verb and its particle


def _surface_key(surface: str) -> tuple[str, ...]:
    return tuple(stem(w) for w in _WORD.findall(fold(surface.replace("-", " ").replace(":", " "))))


def _build_lexicon(
    groups: Iterable[tuple[float, str, str]],
) -> dict[tuple[str, ...], tuple[tuple[str, float], ...]]:
    lexicon: dict[tuple[str, ...], dict[str, float]] = {}
    for weight, targets, surfaces in groups:
        for surface in surfaces.split():
            key = _surface_key(surface)
            if not key:
                continue
            bucket = lexicon.setdefault(key, {})
            for target in targets.split():
                t = stem(target)
                bucket[t] = max(bucket.get(t, 0.0), weight)
    return {key: tuple(value.items()) for key, value in lexicon.items()}


LEXICON: dict[tuple[str, ...], tuple[tuple[str, float], ...]] = _build_lexicon(_GROUPS)
MAX_PHRASE = max(len(key) for key in LEXICON)
# Particle phrases by their verb, for the gapped match ("take … off").
_GAPPED: dict[str, list[tuple[str, ...]]] = {}
for _key in LEXICON:
    if len(_key) == 2 and _key[1] in PARTICLES:
        _GAPPED.setdefault(_key[0], []).append(_key)
LEXICON_WORDS: frozenset[str] = frozenset(w for key in LEXICON for w in key)


def expand(stems: list[str], trust: Sequence[float] | None = None) -> list[tuple[str, float]]:
    """Expansion terms (stemmed) with their weight, for a stemmed word sequence.

    ``stems`` keeps stopwords so that phrases ("get rid of", "take … off") stay phrases; the
    longest phrase wins and shadows the single words inside it. ``trust`` (one factor a word,
    default 1) scales what a phrase brings by its least trusted word: a word the spelling fix
    guessed ("retro" → "retry") must not bring "re run" at full weight.
    """
    factors = list(trust) if trust is not None else [1.0] * len(stems)
    out: list[tuple[str, float]] = []

    def add(hit: tuple[tuple[str, float], ...], positions: Iterable[int]) -> None:
        scale = min(factors[p] for p in positions)
        out.extend((term, weight * scale) for term, weight in hit)

    used: set[int] = set()
    for i, first in enumerate(stems):
        for key in _GAPPED.get(first, ()):
            for j in range(i + 2, min(len(stems), i + 2 + _MAX_GAP)):
                if stems[j] == key[1]:
                    add(LEXICON[key], (i, j))
                    used.update((i, j))
                    break
    i = 0
    while i < len(stems):
        if i in used:
            i += 1
            continue
        for n in range(min(MAX_PHRASE, len(stems) - i), 0, -1):
            hit = LEXICON.get(tuple(stems[i : i + n]))
            if hit is not None:
                add(hit, range(i, i + n))
                i += n
                break
        else:
            i += 1
    return out


# Quoted text, code and what follows "…: " are the payload: titles, messages, code. Their words
# say little about which tool to call ("Migrate auth to Clerk" is a row title, not a migration).
_PAYLOAD = re.compile(
    r"```.*?```|`[^`]*`|\"[^\"]*\"|“[^”]*”|«[^»]*»|„[^“”]*[“”]|(?<!\w)'[^'\n]+'(?!\w)|‘[^’]*’",
    re.S,
)
_COLON_TAIL = re.compile(r"^(?P<head>(?:\S+\s+){2,}?\S*?):\s(?P<tail>.*)$", re.S)

# Shapes whose characters are names, not words (``acme/api`` is a repo, not an API), replaced by
# words that describe them.
_ENTITY_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"https?://\S+"), "url webpage"),
    (re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b"), "email address"),
    (re.compile(r"(?<![\w/])[\w.-]+/[\w.-]+#\d+"), "repository issue pull request number"),
    (re.compile(r"(?<![\w/])#\d+\b"), "issue pull request number"),
    (re.compile(r"(?<![\w/.])[\w.-]*/?[\w-]+\.(?:ya?ml)\b", re.I), "file workflow"),
    (re.compile(r"(?<![\w/.])[\w.-]*/?[\w-]+\.(?:json|toml|py|ts|tsx|js|go|rs|md|txt|cfg|ini)\b", re.I),
     "file content path"),
    (re.compile(r"(?<![\w/.])[\w-]+\.(?:pdf|xlsx?|docx?|pptx?|csv|png|jpe?g|zip|mp4|mp3)\b", re.I), "file"),
    # A dotfile (".nvmrc", ".env", ".github/CODEOWNERS"): a file of a repository.
    (re.compile(r"(?<![\w/.])\.[a-z][\w-]*(?:/[\w.-]+)*"), "file content path"),
    # Git's branch-naming conventions (feature/x, fix/x, release/2025.06) before owner/repo.
    (re.compile(r"(?<![\w/:.@])(?:feature|feat|fix|bugfix|hotfix|release|chore|topic|dev)/[\w./-]+", re.I),
     "branch reference"),
    (re.compile(r"(?<![\w/:.@])[A-Za-z][\w.-]*/[A-Za-z][\w.-]*(?:/[\w.-]+)*(?![\w/])"), "repository"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b"), "commit sha"),
    (re.compile(r"\bv\d+(?:\.\d+)+(?:\.x)?\b|\bv\d+\.x\b|\b\d+\.\d+\.\d+\b"), "release tag version"),
    # A folder of a repository ("migrations/", "src/auth/") and a code symbol ("legacyAuth(",
    # "parseToken()"): what a request points at, not words to match.
    (re.compile(r"(?<![\w/.:])(?:[\w.-]+/)+(?=[\s,;?!)]|$)"), "directory content path"),
    (re.compile(r"\b[A-Za-z_][\w.]*\((?:\))?|\b[a-z]{2,}[A-Z][a-z]\w*"), "code"),
    (re.compile(r"(?<![\w@])@[A-Za-z][\w-]+"), "user"),
    (re.compile(r"\b\d{1,2}(?::\d\d)?\s?(?:am|pm)\b|\b\d{1,2}:\d\d\b", re.I), "event time calendar"),
]
# Shapes that belong to one kind of app: ``acme/web``, ``acme/web#12``, ``feature/x`` are GitHub's
# way of naming things (a hint, weaker than a URL: a drive folder can be "Legal/Contracts" too).
_SHAPE_APPS: dict[str, str] = {"repository": "github", "branch": "github"}
# Which parameters take the value a shape gives: a tool that takes ``issue_number`` is about the
# ``#1777`` the request names; one that only filters a list by ``state`` is not.
_SHAPE_PARAMS: dict[str, re.Pattern[str]] = {
    "number": re.compile(r"(?:issue|pull|pr|discussion)_?number|^number$"),
    "repository": re.compile(r"^(?:owner|repo|repository|repo_name|full_name)$"),
    "email": re.compile(r"email|^to$|recipient|attendee"),
    "url": re.compile(r"url|link|href|uri"),
    "sha": re.compile(r"sha|commit"),
    "branch": re.compile(r"branch|^ref$|^head$|^base$"),
    "version": re.compile(r"tag|version|release"),
    "path": re.compile(r"path|file"),
    "user": re.compile(r"user|username|login|assignee|reviewer"),
    "time": re.compile(r"time|date|start|end"),
}


def shape_kinds(entities: Iterable[str]) -> frozenset[str]:
    """The kinds of value a request's shapes give (``acme/web#12`` → repository, number)."""
    return frozenset(_SHAPE_PARAMS) & frozenset(entities)


def param_kinds(param_names: Iterable[str]) -> frozenset[str]:
    """The kinds of value a tool's parameters take (``issue_number`` → number)."""
    names = [fold(n) for n in param_names]
    return frozenset(kind for kind, pattern in _SHAPE_PARAMS.items() if any(pattern.search(n) for n in names))
# Where a URL points says which app it belongs to.
_URL_HINTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"docs\.google\.com/document"), "googledocs document"),
    (re.compile(r"docs\.google\.com/(?:spreadsheets|presentation)"), "googledrive file"),
    (re.compile(r"drive\.google\.com"), "googledrive file"),
    (re.compile(r"(?:youtube\.com|youtu\.be)/"), "youtube video"),
    (re.compile(r"github\.com/"), "github repository"),
    (re.compile(r"figma\.com/"), "figma file"),
    (re.compile(r"notion\.(?:so|site)/"), "notion page"),
    (re.compile(r"linkedin\.com/"), "linkedin"),
]


@dataclass(frozen=True)
class Parsed:
    """A request split into what it asks, what it names and what it carries."""

    intent: str  # the request with payload and entity shapes removed
    entities: tuple[str, ...]  # words describing the removed shapes
    apps: tuple[str, ...]  # app words read off URLs
    payload: str  # quoted or trailing content
    hinted: tuple[str, ...] = ()  # app words the shapes suggest (owner/repo → github), less sure than a URL


def embedding_text(text: str) -> str:
    """What a sentence encoder should read of a request: its intent, shapes said in words.

    ``acme/web#12`` means nothing to an encoder trained on prose ("acme" and "web" pull it
    towards web tools); "repository issue pull request" does. Payload is left out for the same
    reason the lexical side down-weights it.
    """
    parsed = parse(text)
    return " ".join([*parsed.intent.split(), *dict.fromkeys(parsed.entities)])


def parse(text: str) -> Parsed:
    payload: list[str] = []

    def cut(match: re.Match[str]) -> str:
        payload.append(match.group(0))
        return " "

    rest = _PAYLOAD.sub(cut, text)
    first, _, more = rest.partition("\n")
    if more.strip():
        payload.append(more)
        rest = first
    tail = _COLON_TAIL.match(rest)
    if tail is not None:
        payload.append(tail.group("tail"))
        rest = tail.group("head")
    apps: list[str] = []
    for pattern, description in _URL_HINTS:
        if pattern.search(text):
            apps.extend(description.split())
    entities: list[str] = []
    for pattern, description in _ENTITY_PATTERNS:
        rest, n = pattern.subn(" ", rest)
        if n:
            entities.extend(description.split())
    hinted = tuple(app for word, app in _SHAPE_APPS.items() if word in entities)
    return Parsed(intent=rest, entities=tuple(entities), apps=tuple(apps), payload=" ".join(payload),
                  hinted=hinted)


# ---------------------------------------------------------------------------------------------
# Actions: what a tool does to its object, and what a request asks to be done. A soft match of
# the two keeps "which branches are protected?" on *list branches*, not *update protection*.
# ---------------------------------------------------------------------------------------------

READ, CREATE, UPDATE, DELETE = "read", "create", "update", "delete"

_TOOL_VERBS: dict[str, str] = {
    **dict.fromkeys(_split("list get fetch retrieve find search query check download export read view lookup "
                    "describe count compare is scrape crawl map extract detect discover screenshot"), READ),
    **dict.fromkeys(_split("create add insert upload post send reply forward generate start run dispatch new "
                    "request invite star follow fork copy duplicate render submit publish make "
                    "schedule quick like block ping redeliver rerequest dub append"), CREATE),
    **dict.fromkeys(_split("update patch edit modify set move rename replace mark merge enable disable lock "
                    "unlock transfer sync approve assign toggle rerun re untrash restore dismiss reschedule "
                    "accept"), UPDATE),
    **dict.fromkeys(_split("delete remove cancel stop clear archive trash unstar unfollow revoke empty "
                    "batch_delete unlike unblock unwatch"), DELETE),
}

# Words after which a verb is a noun: "pull request", "workflow run", "check run", "a post".
_NOUN_BEFORE = frozenset(_split("a an the pull workflow check calendar"))

_REQUEST_VERBS: dict[str, str] = {
    **dict.fromkeys(_split("list show get find search see check look pull grab fetch tell view read summarize "
                    "summarise download export any which what whats who whos where when how is are did does "
                    "has was were do anything montre muestra muestrame zeig zeige"), READ),
    **dict.fromkeys(_split("create make new add open start file log spin setup schedule book post send email mail "
                    "write draft upload invite share give grant ask request hook kick run trigger fork star "
                    "follow remember save put cut ship block dm ping reply forward fwd generate render "
                    "export duplicate copy clone turn record crea crear cree creer erstelle erstellen abre "
                    "abrir attach leave comment tack stick duplique duplica mandale manda envia envoie eintragen "
                    "trage ajoute agrega anade"), CREATE),
    **dict.fromkeys(_split("update change edit rename set move mark close reopen reschedule push enable disable "
                    "lock assign approve merge swap replace overwrite append rerun retry restart "
                    "protect bump retarget freeze desactiva desactivar activa activar cambia cambiar "
                    "modifie aktualisiere retitle slide dismiss mute unmute flip deplace mueve verschiebe reabre "
                    "rouvre cierra ferme schliesse"), UPDATE),
    **dict.fromkeys(_split("delete remove nuke kill trash drop cancel stop revoke unassign forget wipe clear "
                    "archive unstar unfollow erase destroy bin borra borrar elimina eliminar supprime supprimer "
                    "losche loschen"), DELETE),
}


# Words a request can ask an action with: known words, never spelling mistakes.
REQUEST_VERBS: frozenset[str] = frozenset(_REQUEST_VERBS)

# Composio's stand-in for an undocumented action: words that describe nothing.
_PLACEHOLDER_DESCRIPTIONS = frozenset({"action docstring"})


def tool_description(tool: Mapping[str, Any]) -> str:
    """A tool's description, or "" when it is a placeholder."""
    description = str(tool.get("description") or "").strip()
    return "" if description.lower() in _PLACEHOLDER_DESCRIPTIONS else description


def tool_actions(slug_words: list[str]) -> frozenset[str]:
    """The action classes of a tool, from its slug's first verb that is not a noun: the "request"
    of ``DISMISS_A_REVIEW_FOR_A_PULL_REQUEST`` and the "list" of the older ``CALENDAR_LIST_INSERT``
    name things. A verb after an "or" joins it (``CREATE_OR_UPDATE_A_SECRET`` does both)."""
    for i, w in enumerate(slug_words):
        action = _TOOL_VERBS.get(w)
        if action is None or (i > 0 and slug_words[i - 1] in _NOUN_BEFORE):
            continue
        joined = slug_words[i + 2] if slug_words[i + 1 : i + 2] == ["or"] and i + 2 < len(slug_words) else ""
        other = _TOOL_VERBS.get(joined)
        return frozenset({action} | ({other} if other else set()))
    return frozenset()


_STEMMED_TOOL_VERBS: dict[str, str] = {stem(verb): action for verb, action in _TOOL_VERBS.items()}


def _meaning_action(meaning: Iterable[tuple[str, float]]) -> str | None:
    """The action of the first tool verb among a lexicon entry's words, if any."""
    return next((action for term, _ in meaning if (action := _STEMMED_TOOL_VERBS.get(term)) is not None), None)


def _phrasal_action(intent_words: list[str], i: int) -> str | None:
    """The action of a particle phrase the verb at ``i`` starts ("check … off" updates, "take …
    off" removes), from the lexicon's meaning of the phrase; None when it starts none."""
    first = stem(intent_words[i])
    for j in range(i + 1, min(len(intent_words), i + 2 + _MAX_GAP)):
        meaning = LEXICON.get((first, intent_words[j])) if intent_words[j] in PARTICLES else None
        action = _meaning_action(meaning or ())
        if action is not None:
            return action
    return None


_QUESTION = frozenset(_split("any which what whats who whos where when how is are did does has was were"))

# Words before a clause's verb that do not change what it asks ("pls close …", "can you close …").
_LEAD_INS = frozenset(_split("please pls plz can could would will you u lucy hey hi ok okay so just now then also and "
                             "quickly quick kindly go ahead"))
# Where a clause ends: punctuation, not the dot of ``v3.2`` or ``config.yaml``.
_CLAUSE_END = re.compile(r"[,;!?:\u2014\u2013]|\.(?=\s|$)|\s-\s|\n")


def clause_starts(intent: str) -> frozenset[int]:
    """Positions in ``words(intent)`` where a clause begins, past its lead-in words."""
    starts: set[int] = set()
    position = 0
    for clause in _CLAUSE_END.split(intent):
        seq = words(clause)
        lead = next((i for i, w in enumerate(seq) if w not in _LEAD_INS), len(seq))
        if lead < len(seq):
            starts.add(position + lead)
        position += len(seq)
    return frozenset(starts)


_CAPITALISED = re.compile(r"(?<=[\w,;:'\")] )[A-Z][a-z]+\b")


def proper_names(intent: str) -> frozenset[str]:
    """Words written with a capital inside a sentence ("the Retro page", "ask Priya"): names and
    titles, which the spelling fix must leave alone ("Retro" is not a typo of "retry")."""
    return frozenset(fold(w) for w in _CAPITALISED.findall(intent))


def _phrase_action(intent_words: list[str], i: int) -> str | None:
    """The action of a phrase of the lexicon starting at ``i`` ("get rid of" deletes, though
    "get" alone reads)."""
    for n in range(min(MAX_PHRASE, len(intent_words) - i), 1, -1):
        action = _meaning_action(LEXICON.get(tuple(stem(w) for w in intent_words[i : i + n])) or ())
        if action is not None:
            return action
    return None


def _action_at(intent_words: list[str], i: int) -> str | None:
    return _phrasal_action(intent_words, i) or _phrase_action(intent_words, i) or _REQUEST_VERBS.get(intent_words[i])


# How sure an action read off a verb inside a clause is (not an imperative opening a clause, not a
# question word): on the tuning sets about half of them say what the request wants ("the deploy
# died, can we get it going again" asks for no read), so the action nudges at half strength.
_INNER_CUE = 0.5


def action_cue(intent_words: list[str], starts: frozenset[int] = frozenset()) -> tuple[str | None, float]:
    """The action class a request asks for, and how sure that reading is (0–1).

    An imperative wins: a clause that opens with an action verb says what to do, whatever the
    clauses before it describe ("raj is on leave, unassign him from #901" removes, though "is"
    came first). Without one (``starts`` are where clauses begin), the first action word decides:
    surely for a question word, less surely for a verb inside a clause. A verb is read with its
    particle when the two make a phrase.
    """
    for i in sorted(starts):
        after = intent_words[i + 1] if i + 1 < len(intent_words) else ""
        # "post id 1048…", "run 8812345": a noun naming a thing, not an imperative.
        if i < len(intent_words) and intent_words[i] not in _QUESTION and not (after.isdigit() or after == "id"):
            action = _action_at(intent_words, i)
            if action is not None:
                return action, 1.0
    for i in range(len(intent_words)):
        action = _action_at(intent_words, i)
        if action is not None:
            return action, 1.0 if intent_words[i] in _QUESTION else _INNER_CUE
    return None, 0.0


def request_action(intent_words: list[str], starts: frozenset[int] = frozenset()) -> str | None:
    """The action class a request asks for (:func:`action_cue` without its sureness)."""
    return action_cue(intent_words, starts)[0]


# A second task joined to the first ("file an issue … and then put a reminder on my calendar"):
# a conjunction followed by an imperative verb. Question words and "I" never start a task, so
# "ana and I are free" or "the needs-triage and ios labels" stay one request.
_TASK_JOIN = re.compile(
    r"(?:[,;]\s*|\s)(?:and\s+then|and\s+also|and|then|also|plus)\s+"
    r"(?:(?:please|pls|can\s+you|could\s+you)\s+)?(?=(?P<verb>[a-z]+)\b)",
    re.I,
)


def split_tasks(text: str) -> list[str]:
    """The tasks of a request that asks for two or more things, or ``[]`` for a single task.

    Joins inside the payload (quotes, code, what follows "…: ", later lines) do not split:
    "mark 'Migrate and delete old repos' as Done" is one task.
    """
    masked = _PAYLOAD.sub(lambda m: "_" * len(m.group(0)), text)
    end = masked.find("\n")
    end = len(masked) if end < 0 else end
    tail_match = _COLON_TAIL.match(masked[:end])
    if tail_match is not None:
        end = tail_match.start("tail")
    cuts: list[tuple[int, int]] = []
    start = 0
    for match in _TASK_JOIN.finditer(masked, 0, end):
        verb = fold(match.group("verb"))
        if verb in _QUESTION or _REQUEST_VERBS.get(verb) is None:
            continue
        if tokens(masked[start : match.start()]):
            cuts.append((match.start(), match.end()))
            start = match.end()
    if not cuts or not tokens(masked[start:end]):
        return []
    parts: list[str] = []
    start = 0
    for cut_start, cut_end in cuts:
        parts.append(text[start:cut_start])
        start = cut_end
    parts.append(text[start:])
    return parts
