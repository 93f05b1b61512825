"""A multi-style emoji corpus: several Iconify emoji sets drawn into one captioned folder, with a
split that holds out what a text-to-image model should generalise to.

    python scripts/datasets/emoji_corpus.py data/emoji                   # 8 styles, 64 px
    python scripts/datasets/emoji_corpus.py data/emoji-sa --share-alike  # + 2 CC-BY-SA sets
    python scripts/datasets/emoji_corpus.py /tmp/look --styles twemoji,fxemoji --limit 40
    python -m t2i.train configs/custom/pipeline.yaml data.path=data/emoji ...

Styles (`STYLES`): the npm packages `@iconify-json/STYLE` at pinned versions, fetched with `npm
pack` into a temporary folder, or read from a local .tgz or folder with `--from STYLE=PATH`;
the CLDR packages as in iconify_emoji.py (`--cldr PATH`, repeatable). By default
fluent-emoji-flat, fluent-emoji (3D), fluent-emoji-high-contrast (MIT), twemoji, emojione,
emojione-monotone, streamline-emojis (CC-BY-4.0) and fxemoji (Apache-2.0); `--share-alike`
adds openmoji and emojione-v1 (CC-BY-SA-4.0); `--styles a,b` picks some. The Noto sets are
kept for evaluation: a style whose name starts with "noto" is refused.

Icons: every icon but the aliases and the hidden ones. Skin-tone variants are kept: the tone
is read from chars.json's Fitzpatrick modifiers (U+1F3FB..U+1F3FF), else from the name
(`-medium-dark-skin-tone`, twice for two people; fluent-emoji's `-medium-dark` at the end
when the base icon is in the set and the whole name is no emoji's, so police-car-light stays).

Concepts are matched across sets by the CLDR English name of the base emoji (no tone): found
by the icon's characters, else by its name normalised to [a-z0-9] against CLDR's names
normalised alike, through `ALIASES` (old and odd names) and `REWRITES` (emojione's
flag-for-X, Unicode's X-cat-face, streamline's numbered drawings X-2, fxemoji's joined words);
an icon no CLDR name fits keeps its own name as concept (counted per style).

OUT gets the imagefolder layout `t2i.data.captioned` reads: `images/STYLE/NAME.png` (drawn by
resvg at SIZE x SIZE, RGBA, transparent; an icon that fails is reported and skipped) and
`metadata.jsonl`, one row per image: `file_name`, `caption` ["NAME, STYLE style", "NAME",
"KEYWORDS, STYLE style"] (NAME is CLDR's, "waving hand: medium skin tone" for a variant; each
caption lowercase, under 20 words), `name` (the icon's), `concept`, `style`, `skin_tone`
(null or the tone), `set` (package@version); `LICENSE.md` (each set's licence, author,
version and image count, the command) and the packages' licence files under `licenses/`.
Nothing is overwritten: a non-empty OUT needs `--force`.

The split, `heldout.json` (`{"seed", "held_out", "parts", "cells", "concepts", "skin_tones"}`,
file names as in metadata.jsonl), has three disjoint parts, none of them in training:
- concepts: `--heldout-concepts` concepts with a CLDR name, every image of them (chosen first);
- cells: for each other concept drawn (without tone) in 5 or more styles, one (concept, style)
  pair, every image of it, tones included; the style rotated so each gives about as many;
- skin_tones: `--heldout-tones` (concept, tone) pairs, in every style (but a held-out cell's
  images, which count there); the base emoji and its other tones stay in training.
A small corpus (`--limit N` icons per style) scales the counts down to a tenth of the
candidates at most, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator
from multiprocessing import Pool
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))  # iconify_emoji.py, beside this one
from iconify_emoji import (  # noqa: E402
    MAX_WORDS,
    Icon,
    Package,
    _clean,
    _find_icons,
    _Parser,
    cldr_keywords,
    clear,
    code_points,
    copy_licence_files,
    licence_section,
    load_cldr,
    npm_pack,
    read_cldr,
    save_drawing,
    visible_icons,
)


class Style(NamedTuple):
    """An Iconify emoji set, one style of the corpus."""

    version: str  # @iconify-json/STYLE, pinned
    caption: str  # its name in captions: "grinning face, CAPTION style"
    share_alike: bool = False  # CC-BY-SA-4.0: built only with --share-alike


STYLES = {
    "fluent-emoji-flat": Style("1.2.6", "fluent flat"),
    "fluent-emoji": Style("1.2.7", "fluent 3d"),
    "fluent-emoji-high-contrast": Style("1.2.6", "fluent high contrast"),
    "twemoji": Style("1.2.5", "twemoji"),
    "emojione": Style("1.2.3", "emojione"),
    "emojione-monotone": Style("1.2.1", "emojione monotone"),
    "streamline-emojis": Style("1.2.4", "streamline"),
    "fxemoji": Style("1.2.2", "fxemoji"),
    "openmoji": Style("1.2.29", "openmoji", share_alike=True),
    "emojione-v1": Style("1.2.3", "emojione v1", share_alike=True),
}
EVALUATION_ONLY = "noto"  # the Noto sets' prefix: kept for evaluation, never fetched
TONES = {"1f3fb": "light", "1f3fc": "medium-light", "1f3fd": "medium"}
TONES |= {"1f3fe": "medium-dark", "1f3ff": "dark"}  # Fitzpatrick modifiers, as in chars.json
_TONE = r"(?<!medium)-((?:medium-)?(?:light|dark)|medium)"
LONG_TONE = re.compile(_TONE + r"-skin-tone(?=-|$)")  # waving-hand-medium-dark-skin-tone
SHORT_TONE = re.compile(_TONE + "$")  # fluent-emoji: waving-hand-medium-dark
MIN_CELL_STYLES = 5  # a concept drawn in this many styles gives one held-out cell
MAX_PART = 0.1  # held-out concepts and tone pairs: at most this share of their candidates
PROGRESS = 2000  # images between progress lines
SIGNS = {"&": "and", "#": "numbersign", "*": "asterisk"}  # spelled out by `normalise`

ALIASES = {  # an icon's normalised name -> the CLDR English name it stands for
    # Unicode's older names (emojione, emojione-monotone, streamline, fxemoji)
    "aubergine": "eggplant",
    "pouting": "enraged face",
    "poutingface": "enraged face",
    "huggingface": "smiling face with open hands",
    "laptopcomputer": "laptop",
    "pistol": "water pistol",
    "directhit": "bullseye",
    "dizzyface": "face with crossed-out eyes",
    "heavycheckmark": "check mark",
    "whiteheavycheckmark": "check mark button",
    "ballotboxwithcheck": "check box with check",
    "heavylargecircle": "hollow red circle",
    "heavyplussign": "plus",
    "heavyminussign": "minus",
    "heavydivisionsign": "divide",
    "heavymultiplicationx": "multiply",
    "heavyheartexclamation": "heart exclamation",
    "bridewithveil": "person with veil",
    "blondhairedperson": "person: blond hair",
    "manwithchinesecap": "person with skullcap",
    "maninsuitlevitating": "person in suit levitating",
    "twomenholdinghands": "men holding hands",
    "twowomenholdinghands": "women holding hands",
    "manandwomanholdinghands": "woman and man holding hands",
    "keycappound": "keycap: #",
    "keycaphashtag": "keycap: #",
    "abutton": "a button (blood type)",
    "bbutton": "b button (blood type)",
    "obutton": "o button (blood type)",
    "abbutton": "ab button (blood type)",
    "uptextbutton": "up! button",
    "flagforcocosislands": "flag: cocos (keeling) islands",
    "flagformacausarchina": "flag: macao sar china",
    "flagformacedonia": "flag: north macedonia",
    "flagformyanmar": "flag: myanmar (burma)",
    "flagforswaziland": "flag: eswatini",
    "flagforturkey": "flag: türkiye",
    # fluent-emoji (3D): Microsoft's file names
    "piata": "piñata",
    "knockedoutface": "face with crossed-out eyes",
    "personelf": "elf",
    "personfairy": "fairy",
    "persongenie": "genie",
    "personmage": "mage",
    "personvampire": "vampire",
    "personzombie": "zombie",
    "personsuperhero": "superhero",
    "personsupervillain": "supervillain",
    "personmerpeople": "merperson",
    "manmerpeople": "merman",
    "womanmerpeople": "mermaid",
    "persondeaf": "deaf person",
    "mandeaf": "deaf man",
    "womandeaf": "deaf woman",
    "personblondehair": "person: blond hair",
    "manblondehair": "man: blond hair",
    "womanblondehair": "woman: blond hair",
    "personwithbunnyears": "people with bunny ears",
    "manwithbunnyears": "men with bunny ears",
    "womanwithbunnyears": "women with bunny ears",
    "personwrestling": "people wrestling",
    "manwrestling": "men wrestling",
    "womanwrestling": "women wrestling",
    "phoenixbird": "phoenix",
    "redtriangle": "red triangle pointed up",
    # streamline
    "crazyface": "zany face",
    "anxiousface": "anxious face with sweat",
    "gamedice": "game die",
    "gesturingok": "person gesturing ok",
    "redwineglass": "wine glass",
    "schoolbackpack": "backpack",
    # two people, two tones: CLDR names the tone-less sequence only in its tones' names
    "kisspersonperson": "kiss",
    "couplewithheartpersonperson": "couple with heart",
    # fxemoji: Unicode's and GitHub's short names, joined
    "anguish": "anguished face",
    "coldsweat": "anxious face with sweat",
    "dissapointedrelief": "sad but relieved face",
    "grin": "beaming face with smiling eyes",
    "grinsquint": "grinning squinting face",
    "grinsweat": "grinning face with sweat",
    "grintears": "face with tears of joy",
    "hearteyes": "smiling face with heart-eyes",
    "halo": "smiling face with halo",
    "imp": "angry face with horns",
    "kissclosedeyes": "kissing face with closed eyes",
    "kisseyes": "kissing face with smiling eyes",
    "nomouth": "face without mouth",
    "openmouth": "face with open mouth",
    "perservere": "persevering face",
    "screamfear": "face screaming in fear",
    "smallfrown": "slightly frowning face",
    "smallsmile": "slightly smiling face",
    "smileeyes": "smiling face with smiling eyes",
    "smirk": "smirking face",
    "sweat": "downcast face with sweat",
    "tongueout": "face with tongue",
    "tongueoutwink": "winking face with tongue",
    "triumph": "face with steam from nose",
    "whitesmilingface": "smiling face",
    "frownmouth": "frowning face with open mouth",
    "medicalmask": "face with medical mask",
    "poo": "pile of poo",
    "moyai": "moai",
    "monkeyhear": "hear-no-evil monkey",
    "monkeysee": "see-no-evil monkey",
    "monkeyspeak": "speak-no-evil monkey",
    "fullmoonwithface": "full moon face",
    "newmoonwithface": "new moon face",
    "waningbibbousmoon": "waning gibbous moon",
    "2hearts": "two hearts",
    "anger": "anger symbol",
    "dash": "dashing away",
    "gem": "gem stone",
    "heartblue": "blue heart",
    "heartgreen": "green heart",
    "heartpurple": "purple heart",
    "heartyellow": "yellow heart",
    "heartarrow": "heart with arrow",
    "heartribbon": "heart with ribbon",
    "largebluecircle": "blue circle",
    "largeredcircle": "red circle",
    "noentrysign": "prohibited",
    "smokingsymbol": "cigarette",
    "donotlittersymbol": "no littering",
    "putlitterinitsplacesymbol": "litter in bin sign",
    "potablewatersystem": "potable water",
    "nooneunder18symbol": "no one under eighteen",
    "hourglass": "hourglass done",
    "hourglassflowingsand": "hourglass not done",
    "aok": "ok hand",
    "devilhorns": "sign of the horns",
    "flexbicep": "flexed biceps",
    "clap": "clapping hands",
    "pray": "folded hands",
    "handup": "raised hand",
    "raisedhandpartfingers": "vulcan salute",
    "raisedhandsfingerssplayed": "hand with fingers splayed",
    "reversehandmiddlefinger": "middle finger",
    "leftwritinghand": "writing hand",
    "blonde": "person: blond hair",
    "bride": "person with veil",
    "gma": "old woman",
    "gpa": "old man",
    "bunnyears": "people with bunny ears",
    "couple": "woman and man holding hands",
    "couplekiss": "kiss",
    "guyguy": "men holding hands",
    "girlgirl": "women holding hands",
    "cop": "police officer",
    "guardsman": "guard",
    "sleuthspy": "detective",
    "dancer": "woman dancing",
    "haircut": "person getting haircut",
    "headmassage": "person getting massage",
    "bowing": "person bowing",
    "okgesture": "person gesturing ok",
    "nogesture": "person gesturing no",
    "weightlifter": "person lifting weights",
    "golfer": "person golfing",
    "surfer": "person surfing",
    "swimming": "person swimming",
    "walking": "person walking",
    "running": "person running",
    "bicyclist": "person biking",
    "rowboat": "person rowing boat",
    "bath": "person taking bath",
    "turban": "person wearing turban",
    "fatherchristmas": "santa claus",
    "speakingheadinsilhouette": "speaking head",
    "bunny": "rabbit face",
    "dragonhead": "dragon face",
    "bactriancamel": "two-hump camel",
    "dromedarycamel": "camel",
    "frontfacingchick": "front-facing baby chick",
    "pigsnout": "pig nose",
    "doveofpeace": "dove",
    "evergreen": "evergreen tree",
    "fallingleaf": "fallen leaf",
    "leaffluttering": "leaf fluttering in wind",
    "earofmaize": "ear of corn",
    "earofrice": "sheaf of rice",
    "chilipepper": "hot pepper",
    "curryandrice": "curry rice",
    "sliceofpizza": "pizza",
    "fishcakeswirl": "fish cake with swirl",
    "sakebottleandcup": "sake",
    "forkknife": "fork and knife",
    "hocho": "kitchen knife",
    "daggerknife": "dagger",
    "americasglobe": "globe showing americas",
    "asiaaustraliaglobe": "globe showing asia-australia",
    "europeafricaglobe": "globe showing europe-africa",
    "meridianglobe": "globe with meridians",
    "silhouetteohjapan": "map of japan",
    "snowmountains": "snow-capped mountain",
    "toykotower": "tokyo tower",
    "europeancastle": "castle",
    "europeanpostoffice": "post office",
    "housebuilding": "house",
    "housebuildings": "houses",
    "sunsetoverbuildings": "sunset",
    "highspeedtrainbulletnose": "bullet train",
    "steamlocomotive": "locomotive",
    "racecar": "racing car",
    "raincloud": "cloud with rain",
    "snowcloud": "cloud with snow",
    "sunraincloud": "sun behind rain cloud",
    "whitesunbehindcloud": "sun behind large cloud",
    "whitesunsmallcloud": "sun behind small cloud",
    "whitesun": "sun",
    "whitemediumstar": "star",
    "eightpointedblackstar": "eight-pointed star",
    "eightspokedasterix": "eight-spoked asterisk",
    "sixpointedstarwithdot": "dotted six-pointed star",
    "diamondshapewithdotinside": "diamond with a dot",
    "confetti": "confetti ball",
    "fireworksparkler": "sparkler",
    "present": "wrapped gift",
    "izakayalantern": "red paper lantern",
    "playingcardblackjoker": "joker",
    "mahjong": "mahjong red dragon",
    "billiards": "pool 8 ball",
    "basketballandhoop": "basketball",
    "tennisball": "tennis",
    "fishingpoleandfish": "fishing pole",
    "skiandskiboot": "skis",
    "tie": "necktie",
    "mansshirt": "t-shirt",
    "mensshoe": "man's shoe",
    "heels": "high-heeled shoe",
    "sandals": "woman's sandal",
    "boot": "woman's boot",
    "lips": "mouth",
    "cellphone": "mobile phone",
    "minidisc": "computer disk",
    "opticaldisc": "optical disk",
    "framewithpicture": "framed picture",
    "studiomic": "studio microphone",
    "controlknob": "control knobs",
    "electrictorch": "flashlight",
    "spiralcalendarpad": "spiral calendar",
    "bookmarktab": "bookmark",
    "multiplemusicalnotes": "musical notes",
    "speakercancellation": "muted speaker",
    "speakeronesoundwave": "speaker medium volume",
    "speakerwith1soundwave": "speaker medium volume",
    "speaker3soundwaves": "speaker high volume",
    "rightspeaker3soundwaves": "speaker high volume",
    "speechbubble": "speech balloon",
    "lock": "locked",
    "openlock": "unlocked",
    "lockandkey": "locked with key",
    "lockwithinkpen": "locked with pen",
    "chartupwardstrend": "chart increasing",
    "chartdownwardstrend": "chart decreasing",
    "chartupwardstrendyen": "chart increasing with yen",
    "automatedtellermachine": "atm sign",
    "antennawithbars": "antenna bars",
    "closedmailboxlowered": "closed mailbox with lowered flag",
    "closedmailboxraised": "closed mailbox with raised flag",
    "openmailboxlowered": "open mailbox with lowered flag",
    "openmailboxraised": "open mailbox with raised flag",
    "outbox": "outbox tray",
    "whitelatincross": "latin cross",
    "omsymbol": "om",
    "saggitarius": "sagittarius",
    "scorpius": "scorpio",
    "highbrightness": "bright button",
    "lowbrightness": "dim button",
    "twistedrightwardsarrows": "shuffle tracks button",
    "uppointingredtriangle": "red triangle pointed up",
    "downpointingredtriangle": "red triangle pointed down",
    "uppointingsmallredtrisngle": "upwards button",
    "downpointingsmallredtrisngle": "downwards button",
    "soonwithrightarrow": "soon arrow",
    "backwithleftwardsarrow": "back arrow",
    "endwithleftwardsarrow": "end arrow",
    "topwithupwardsarrow": "top arrow",
    "onarrowleftright": "on! arrow",
    "blackquestionmark": "red question mark",
    "whiteexclaimationmark": "white exclamation mark",
    "heavyexclaimationmarksymbol": "red exclamation mark",
    "doubleexclaimationmark": "double exclamation mark",
    "exclaimationquestionmark": "exclamation question mark",
    "blackuniversalrecyclingsymbol": "recycling symbol",
    "informationsource": "information",
    "menssymbol": "men's room",
    "womenssymbol": "women's room",
    "inputsymbolforlatincapitalletters": "input latin uppercase",
    "inputsymbolforlatinsmallletters": "input latin lowercase",
    "inputsymbolforlatinletters": "input latin letters",
    "negativesquaredab": "ab button (blood type)",
    "negativesquaredlatincaptiala": "a button (blood type)",
    "negativesquaredlatincaptialb": "b button (blood type)",
    "negativesquaredlatincaptialo": "o button (blood type)",
    "negativesquaredlatincapitalletterp": "p button",
    "negativesquaredcrossmark": "cross mark button",
    "circledlatincapitalletterm": "circled m",
    "squaredkatakanakoko": "japanese “here” button",
    "squaredkatakanasa": "japanese “service charge” button",
    "circledideographaccept": "japanese “acceptable” button",
    "circledideographadvantage": "japanese “bargain” button",
    "circledideographcongratulation": "japanese “congratulations” button",
    "circledideographsecret": "japanese “secret” button",
    "blackclubsuit": "club suit",
    "blackdiamondsuit": "diamond suit",
    "blackheartsuit": "heart suit",
    "blackspadesuit": "spade suit",
    "blackdroplet": "droplet",
    "blackscissors": "scissors",
    "blacktelephone": "telephone",
    "blackpushpin": "pushpin",
    "blackrosette": "rosette",
    "chineseflag": "flag: china",
    "italianflag": "flag: italy",
    "greatbritainflag": "flag: united kingdom",
    "koreaflag": "flag: south korea",
    "russianflag": "flag: russia",
    "spanishflag": "flag: spain",
}
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
HOURS = (*DIGITS[1:], "ten", "eleven", "twelve")
ALIASES |= {f"digit{word}": f"keycap: {n}" for n, word in enumerate(DIGITS)}  # emojione
ALIASES |= {f"clock{n}oclock": f"{word} o'clock" for n, word in enumerate(HOURS, 1)}  # fxemoji
ALIASES |= {f"clock{n}thirty": f"{word}-thirty" for n, word in enumerate(HOURS, 1)}
REWRITES = [  # tried in turn on a normalised name that matched nothing as it is
    (re.compile(r"^flagfor(.*flags?)$"), r"\1"),  # emojione: flag-for-white-flag -> white flag
    (re.compile(r"^flagfor"), "flag"),  # emojione: flag-for-fiji -> flag: fiji
    (re.compile(r"catface"), "cat"),  # Unicode's grinning-cat-face -> grinning cat
    (re.compile(r"face$"), ""),  # bear-face -> bear
    (re.compile(r"$"), "face"),  # fxemoji: angry -> angry face
    (re.compile(r"^(.*)flag$"), r"flag\1"),  # fxemoji: franceflag -> flag: france
    (re.compile(r"^"), "flag"),  # streamline: brazil -> flag: brazil
    (re.compile(r"^squared(.*)$"), r"\1button"),  # fxemoji: squaredcool -> cool button
    (re.compile(r"^banknote(.*)$"), r"\1banknote"),  # fxemoji: banknoteyen -> yen banknote
    (re.compile(r"side$"), ""),  # fxemoji: tigerside -> tiger
    (re.compile(r"(symbol|sign)$"), ""),  # fxemoji: linksymbol -> link
    (re.compile(r"^(reverse|lowerleft)"), ""),  # fxemoji: lowerleftcrayon -> crayon
]


class Entry(NamedTuple):
    """One image of the corpus: its icon and style, its concept and tone, its captions' source."""

    style: str
    icon: Icon
    concept: str  # the base emoji's CLDR name (no tone), else the icon's own name
    tone: str | None  # "medium-dark", "light, dark" (two people), or None
    title: str  # its name in captions: CLDR's ("waving hand: medium skin tone") or the icon's
    annotation: dict  # CLDR's {"tts", "default"} for it, {} when unmatched
    matched: bool  # the concept is a CLDR name

    @property
    def file_name(self) -> str:
        """Its image, relative to the corpus folder."""
        return f"images/{self.style}/{self.icon.name}.png"


class Split(NamedTuple):
    """What is held out: (concept, style) cells, whole concepts, (concept, tone) pairs."""

    cells: list[tuple[str, str]]
    concepts: list[str]
    tones: list[tuple[str, str]]
    notes: list[str]  # what was scaled down, and why


# ---- command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments."""
    p = _Parser(
        prog="python scripts/datasets/emoji_corpus.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", metavar="OUT", help="the folder to write (must be empty or new)")
    p.add_argument("--styles", help=f"comma-separated, from: {', '.join(STYLES)}")
    p.add_argument("--share-alike", action="store_true", help="add the CC-BY-SA-4.0 sets")
    p.add_argument(
        "--from", dest="sources", action="append", metavar="STYLE=PATH", help="a local package"
    )
    p.add_argument("--cldr", action="append", metavar="PATH", help="a local CLDR package")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--jobs", type=int, default=os.cpu_count(), help="drawing processes")
    p.add_argument("--limit", type=int, help="keep at most N icons per style (a quick look)")
    p.add_argument("--seed", type=int, default=0, help="the split's seed (default 0)")
    p.add_argument("--heldout-concepts", type=int, default=150, help="concepts held out")
    p.add_argument("--heldout-tones", type=int, default=100, help="(concept, tone) pairs")
    p.add_argument("--force", action="store_true", help="write into a non-empty OUT")
    return p


def chosen_styles(args: argparse.Namespace) -> list[str]:
    """The styles to build: --styles in its order, else the defaults (+ --share-alike's)."""
    if args.styles is not None:
        return list(dict.fromkeys(s.strip() for s in args.styles.split(",") if s.strip()))
    return [name for name, style in STYLES.items() if args.share_alike or not style.share_alike]


def sources(args: argparse.Namespace) -> dict[str, str]:
    """--from STYLE=PATH as {style: path} (checked by `check_args`)."""
    return dict(source.split("=", 1) for source in args.sources or [])


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, naming the flag, or None (before any slow work)."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return f"OUT {out} is a file, not a folder"
    if out.is_dir() and any(out.iterdir()) and not args.force:
        return f"OUT {out} exists and is not empty; choose another or pass --force"
    numbers = {
        "--size": (args.size, 8, 4096),
        "--jobs": (args.jobs, 1, 256),
        "--limit": (args.limit, 1, None),
        "--heldout-concepts": (args.heldout_concepts, 0, None),
        "--heldout-tones": (args.heldout_tones, 0, None),
    }
    for flag, (value, low, high) in numbers.items():
        if value is not None and not low <= value <= (high or value):
            expected = f"{low} to {high}" if high else f"{low} or more"
            return f"{flag} {value}: expected {expected}"
    return _check_styles(args) or _check_paths(args)


def _check_styles(args: argparse.Namespace) -> str | None:
    """An unknown, evaluation-only or share-alike style in --styles or --from, else None."""
    if args.styles is not None and not chosen_styles(args):
        return f"--styles {args.styles!r}: no style named"
    for source in args.sources or []:
        if "=" not in source:
            return f"--from {source}: expected STYLE=PATH"
    named = [("--styles", s) for s in chosen_styles(args)] + [("--from", s) for s in sources(args)]
    for flag, name in named:
        if name.lower().startswith(EVALUATION_ONLY):
            return f"{flag} {name}: the Noto emoji sets are kept for evaluation, never built"
        if name not in STYLES:
            return f"{flag} {name}: unknown style; choose from {', '.join(STYLES)}"
        if STYLES[name].share_alike and not args.share_alike:
            return f"{flag} {name}: a CC-BY-SA-4.0 set; pass --share-alike to include it"
        if flag == "--from" and name not in chosen_styles(args):
            return f"--from {name}: not among the styles built; add it to --styles"
    return None


def _check_paths(args: argparse.Namespace) -> str | None:
    """A --from or --cldr path that is missing or no package, or npm missing, else None."""
    given = [(f"--from {style}={path}", path, True) for style, path in sources(args).items()]
    given += [(f"--cldr {path}", path, False) for path in args.cldr or []]
    for what, path, icon_set in given:
        if not Path(path).exists():
            return f"{what}: no such file or folder"
        if Path(path).is_file() and not tarfile.is_tarfile(path):
            return f"{what}: not a .tgz package nor a folder"
        if icon_set and Path(path).is_dir() and not _find_icons(Path(path)):
            return f"{what}: no icons.json in it (nor in its package/ folder)"
    fetched = set(chosen_styles(args)) - set(sources(args))
    if (fetched or args.cldr is None) and shutil.which("npm") is None:
        return "npm is not on PATH; give the packages with --from and --cldr"
    return None


# ---- fetching ----------------------------------------------------------------------------


def package_spec(style: str) -> str:
    """The npm package of a style, name@version (never one of the Noto sets).

    Args:
        style: a name in STYLES.
    """
    if style.lower().startswith(EVALUATION_ONLY):
        raise ValueError(f"{style}: the Noto emoji sets are kept for evaluation")
    return f"@iconify-json/{style}@{STYLES[style].version}"


def load_packages(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Package], list[Package]]:
    """Each style's icon package and the CLDR packages: the given paths, else fetched with npm.

    Args:
        args: the checked command line.
        tmp: a temporary folder for the downloads.
    """
    given = sources(args)
    packages = {}
    for i, style in enumerate(chosen_styles(args)):
        path = given.get(style) or npm_pack(package_spec(style), tmp / f"s{i}")
        packages[style] = Package(path)
    return packages, load_cldr(args.cldr, tmp)


def check_packages(packages: dict[str, Package], given: dict[str, str]) -> str | None:
    """A package that is no icon set or holds another style than its name, else None."""
    for style, package in packages.items():
        data = package.json("icons.json")
        where = f"--from {style}={given[style]}" if style in given else package.label
        if data is None or "icons" not in data:
            return f"{where}: no icons.json with icons in it"
        if data.get("prefix") != style:
            return f"{where}: holds the set {data.get('prefix')!r}, not {style!r}"
    return None


# ---- concepts ----------------------------------------------------------------------------


def normalise(name: str) -> str:
    """A name reduced to lowercase [a-z0-9] ("Flag: Côte d'Ivoire" -> "flagcotedivoire";
    "keycap: *" -> "keycapasterisk", not "keycap" as "keycap: #" is)."""
    ascii_ = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    for sign, word in SIGNS.items():
        ascii_ = ascii_.replace(sign, word)
    return re.sub(r"[^a-z0-9]", "", ascii_)


def _candidates(key: str) -> Iterator[str]:
    """The normalised names an icon's normalised name may stand for, in order of trust."""
    bare = re.sub(r"\d+$", "", key)  # streamline's numbered drawings: fox-face-1
    keys = [key, normalise(ALIASES.get(key, ""))]
    if bare and bare != key:
        keys += [bare, normalise(ALIASES.get(bare, ""))]
    keys = [k for k in keys if k]
    yield from keys
    for k in keys:
        for pattern, replacement in REWRITES:
            yield pattern.sub(replacement, k, count=1)


class Namer:
    """CLDR names for icons: by their characters, else by their names.

    Args:
        cldr: annotations from `read_cldr` (emoji and lowercase name -> {"tts", "default"}).
    """

    def __init__(self, cldr: dict[str, dict]) -> None:
        self.cldr = cldr
        self.by_name: dict[str, dict] = {}
        for annotation in cldr.values():
            for tts in annotation.get("tts", []):
                self.by_name.setdefault(normalise(tts), annotation)

    def by_char(self, char: str) -> dict | None:
        """The annotation of an emoji (its characters, U+FE0F or not), None when unknown."""
        annotation = self.cldr.get(char.replace("\ufe0f", ""))
        return annotation if annotation and annotation.get("tts") else None

    def by_icon_name(self, name: str) -> dict | None:
        """The annotation an icon's name stands for (ALIASES, REWRITES), None when none."""
        for key in _candidates(normalise(name)):
            if key in self.by_name:
                return self.by_name[key]
        return None

    def variant(self, concept: str, tones: list[str], base: dict | None) -> tuple[str, dict]:
        """CLDR's name and annotation of a concept in skin tones, else a name made alike.

        Args:
            concept: the base emoji's name ("waving hand", "person: blond hair").
            tones: its tones (["medium"], ["light", "dark"]).
            base: the base emoji's annotation, the keywords' fallback.
        """
        tone = ", ".join(f"{t} skin tone" for t in tones)
        head, _, rest = concept.partition(": ")
        names = [f"{concept}: {tone}", f"{head}: {tone}, {rest}", f"{concept}, {tone}"]
        for name in names:
            if name in self.cldr:
                return name, self.cldr[name]
        return names[0], base or {}


def split_tone(name: str, siblings: set[str], namer: Namer) -> tuple[str, list[str]]:
    """An icon name's base and skin tones: `-TONE-skin-tone` anywhere (once per person), else
    fluent-emoji's `-TONE` at the end when the base is in the set and the name no emoji's."""
    tones = LONG_TONE.findall(name)
    if tones:
        return LONG_TONE.sub("", name), tones
    short = SHORT_TONE.search(name)
    if short and name[: short.start()] in siblings and namer.by_icon_name(name) is None:
        return name[: short.start()], [short.group(1)]
    return name, []


def describe(style: str, icon: Icon, siblings: set[str], namer: Namer) -> Entry:
    """An icon's concept, tone and CLDR name: by its characters, else by its name.

    Args:
        style: its style.
        icon: the icon.
        siblings: the names of every icon in its set (a tone suffix needs its base there).
        namer: the CLDR names.
    """
    base_name, tones = split_tone(icon.name, siblings, namer)
    codes = code_points(icon)
    base, whole = None, None
    if codes:
        tones = [TONES[c] for c in codes if c in TONES]
        plain = "".join(c for c, h in zip(icon.char, codes, strict=True) if h not in TONES)
        base = namer.by_char(plain)
        whole = namer.by_char(icon.char) if tones else base
    base = base or namer.by_icon_name(base_name)
    concept = _clean(base["tts"][0]) if base else _clean(base_name.replace("-", " "))
    tones = list(dict.fromkeys(tones))  # two people of one tone: one tone
    if not tones:
        title, annotation = concept, base or {}
    elif whole:
        title, annotation = _clean(whole["tts"][0]), whole
    else:
        title, annotation = namer.variant(concept, tones, base)
    tone = ", ".join(tones) or None
    return Entry(style, icon, concept, tone, title, annotation, base is not None)


def read_corpus(packages: dict[str, Package], namer: Namer, limit: int | None) -> list[Entry]:
    """Every style's icons as entries, sorted by concept; at most `limit` per style.

    Args:
        packages: style -> its icon package.
        namer: the CLDR names.
        limit: the most icons kept per style (the first by concept, so the styles overlap).
    """
    entries = []
    for style, package in packages.items():
        _, icons = visible_icons(package)
        siblings = {icon.name for icon in icons}
        found = [describe(style, icon, siblings, namer) for icon in icons]
        found.sort(key=lambda e: (e.concept, e.tone or "", e.icon.name))
        entries += found[:limit]
    return entries


# ---- drawing and captions ----------------------------------------------------------------


def draw_all(
    entries: list[Entry], out: Path, size: int, jobs: int
) -> tuple[list[Entry], dict[str, str]]:
    """Draw every entry into out/images/STYLE/ (`jobs` processes); the drawn ones and the
    skipped ones (file name -> why).

    Args:
        entries: what to draw.
        out: the corpus folder.
        size: the image side.
        jobs: drawing processes (1: none started).
    """
    for style in {e.style for e in entries}:
        (out / "images" / style).mkdir(parents=True, exist_ok=True)
    tasks = [(e.icon, size, str(out / e.file_name)) for e in entries]
    drawn, skipped, start = [], {}, time.perf_counter()
    for i, (entry, problem) in enumerate(zip(entries, _drawings(tasks, jobs), strict=True), 1):
        if problem:
            skipped[entry.file_name] = problem
            print(f"skipped {entry.file_name}: {problem}", file=sys.stderr)
        else:
            drawn.append(entry)
        if i % PROGRESS == 0 or i == len(tasks):
            print(f"drew {i} of {len(tasks)} ({time.perf_counter() - start:.0f} s)", flush=True)
    return drawn, skipped


def _drawings(tasks: list[tuple[Icon, int, str]], jobs: int) -> Iterator[str | None]:
    """`save_drawing` over the tasks in order: in `jobs` processes, or in this one for 1."""
    if jobs == 1:
        yield from map(save_drawing, tasks)
        return
    with Pool(jobs) as pool:
        yield from pool.imap(save_drawing, tasks, chunksize=16)


def captions(entry: Entry) -> list[str]:
    """An image's captions: "NAME, STYLE style", "NAME", "KEYWORDS, STYLE style".

    Args:
        entry: the image.
    """
    style = f", {STYLES[entry.style].caption} style"
    keywords = cldr_keywords(entry.annotation, MAX_WORDS - len(style.split()))
    found = [entry.title + style, entry.title]
    if keywords:
        found.append(", ".join(keywords) + style)
    return list(dict.fromkeys(c for c in found if len(c.split()) <= MAX_WORDS))


def row(entry: Entry, label: str) -> dict:
    """An image's metadata.jsonl row.

    Args:
        entry: the image.
        label: its package, name@version.
    """
    return {
        "file_name": entry.file_name,
        "caption": captions(entry),
        "name": entry.icon.name,
        "concept": entry.concept,
        "style": entry.style,
        "skin_tone": entry.tone,
        "set": label,
    }


# ---- the split ---------------------------------------------------------------------------


def choose_split(entries: list[Entry], seed: int, n_concepts: int, n_tones: int) -> Split:
    """The held-out concepts (chosen first), cells and (concept, tone) pairs, seeded.

    Args:
        entries: the drawn images.
        seed: the split's seed.
        n_concepts: concepts to hold out (scaled down for a small corpus).
        n_tones: (concept, tone) pairs to hold out (scaled down alike).
    """
    rng, notes = random.Random(seed), []
    named = sorted({e.concept for e in entries if e.matched})
    n = _scaled(n_concepts, len(named), "--heldout-concepts", "concepts with a CLDR name", notes)
    concepts = sorted(rng.sample(named, n))
    cells = held_cells(entries, set(concepts), rng)
    bases = {e.concept for e in entries if e.tone is None} - set(concepts)
    in_cells = set(cells)  # a pair needs images outside the held-out cells
    outside = [e for e in entries if e.tone and (e.concept, e.style) not in in_cells]
    pairs = sorted({(e.concept, e.tone) for e in outside if e.concept in bases})
    n = _scaled(n_tones, len(pairs), "--heldout-tones", "(concept, tone) pairs", notes)
    return Split(cells, concepts, sorted(rng.sample(pairs, n)), notes)


def _scaled(asked: int, candidates: int, flag: str, what: str, notes: list[str]) -> int:
    """`asked`, or at most MAX_PART of the candidates (1 of 2 or more), noted when fewer."""
    most = max(1, int(MAX_PART * candidates)) if candidates >= 2 else 0
    if asked > most:
        notes.append(f"{flag} {asked} scaled down to {most} (of {candidates} {what})")
    return min(asked, most)


def held_cells(
    entries: list[Entry], excluded: set[str], rng: random.Random
) -> list[tuple[str, str]]:
    """One (concept, style) pair per concept drawn in MIN_CELL_STYLES styles or more: in a
    seeded order of the concepts, the style held out least so far (ties: a seeded order).

    Args:
        entries: the drawn images.
        excluded: concepts held out whole.
        rng: the split's generator.
    """
    styles_of = defaultdict(set)
    for e in entries:
        if e.tone is None and e.concept not in excluded:
            styles_of[e.concept].add(e.style)
    eligible = sorted(c for c, styles in styles_of.items() if len(styles) >= MIN_CELL_STYLES)
    rng.shuffle(eligible)
    order = sorted({e.style for e in entries})
    rng.shuffle(order)
    counts: Counter = Counter()
    cells = []
    for concept in eligible:
        style = min(styles_of[concept], key=lambda s: (counts[s], order.index(s)))
        counts[style] += 1
        cells.append((concept, style))
    return sorted(cells)


def assign_parts(entries: list[Entry], split: Split) -> dict[str, list[str]]:
    """The held-out file names of each part (a file in a held-out cell counts there only)."""
    concepts, cells, tones = set(split.concepts), set(split.cells), set(split.tones)
    parts: dict[str, list[str]] = {"cells": [], "concepts": [], "skin_tones": []}
    for e in entries:
        if e.concept in concepts:
            parts["concepts"].append(e.file_name)
        elif (e.concept, e.style) in cells:
            parts["cells"].append(e.file_name)
        elif (e.concept, e.tone) in tones:
            parts["skin_tones"].append(e.file_name)
    return {name: sorted(files) for name, files in parts.items()}


# ---- writing -----------------------------------------------------------------------------


def write_corpus(
    out: Path, entries: list[Entry], packages: dict[str, Package], split: Split, seed: int
) -> dict[str, list[str]]:
    """out/metadata.jsonl and out/heldout.json; the held-out parts.

    Args:
        out: the corpus folder.
        entries: the drawn images.
        packages: style -> its icon package (for the rows' `set`).
        split: what is held out.
        seed: the split's seed.
    """
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row(e, packages[e.style].label)) + "\n" for e in entries)
    parts = assign_parts(entries, split)
    heldout = {
        "seed": seed,
        "held_out": sorted(f for files in parts.values() for f in files),
        "parts": parts,
        "cells": [list(cell) for cell in split.cells],
        "concepts": split.concepts,
        "skin_tones": [list(pair) for pair in split.tones],
    }
    (out / "heldout.json").write_text(json.dumps(heldout, indent=1) + "\n", encoding="utf-8")
    return parts


def write_licences(
    out: Path, packages: dict[str, Package], cldr: list[Package], counts: Counter, command: str
) -> None:
    """out/LICENSE.md (each set's licence, author, version and image count; the command) and
    the packages' licence files under out/licenses/.

    Args:
        out: the corpus folder.
        packages: style -> its icon package.
        cldr: the CLDR packages.
        counts: images per style.
        command: the command that built the folder.
    """
    lines = ["# Licences and attribution", ""]
    lines += ["Images drawn from Iconify emoji sets, one style each; captions from the Unicode"]
    lines += ["CLDR annotations and the icon names.", ""]
    for style, package in packages.items():
        info = package.json("icons.json").get("info") or package.json("info.json") or {}
        section = licence_section(package, info, f"Images, {STYLES[style].caption} style")
        lines += [*section[:-1], f"- images: {counts[style]}", ""]
    for package in cldr:
        lines += licence_section(package, {}, "Captions")
    lines += ["## Built with", "", f"    {command}", ""]
    (out / "LICENSE.md").write_text("\n".join(lines), encoding="utf-8")
    copy_licence_files(out, [*packages.values(), *cldr])


def clear_corpus(out: Path) -> None:
    """Remove what an earlier run wrote into out (for --force)."""
    clear(out)
    for file in out.glob("images/*/*.png"):
        file.unlink()
    (out / "heldout.json").unlink(missing_ok=True)


def summary(entries: list[Entry], skipped: dict[str, str], parts: dict, split: Split) -> str:
    """The printed summary: images, unmatched and tone variants per style; concepts; parts."""
    lines = [f"{'style':<28}{'images':>8}{'unmatched':>11}{'tones':>8}{'skipped':>9}"]
    for style in dict.fromkeys(e.style for e in entries):
        mine = [e for e in entries if e.style == style]
        unmatched = sum(not e.matched for e in mine)
        tones = sum(e.tone is not None for e in mine)
        failed = sum(f.startswith(f"images/{style}/") for f in skipped)
        lines.append(f"{style:<28}{len(mine):>8}{unmatched:>11}{tones:>8}{failed:>9}")
    concepts = {e.concept for e in entries}
    named = {e.concept for e in entries if e.matched}
    lines.append(f"{len(entries)} images, {len(concepts)} concepts ({len(named)} CLDR names)")
    chosen = {"cells": split.cells, "concepts": split.concepts, "skin_tones": split.tones}
    held = [f"{k} {len(v)} ({len(parts[k])} images)" for k, v in chosen.items()]
    training = len(entries) - sum(len(files) for files in parts.values())
    lines.append(f"held out: {', '.join(held)}; training {training} images")
    return "\n".join(lines + split.notes)


# ---- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """The command line: build the corpus; the exit status (2: bad arguments).

    Args:
        argv: the arguments (default: sys.argv[1:]).
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a one-line argparse error already printed
        return int(done.code or 0)
    problem = check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emoji-corpus-") as tmp:
        try:
            packages, cldr = load_packages(args, Path(tmp))
        except (RuntimeError, subprocess.TimeoutExpired, tarfile.TarError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    problem = check_packages(packages, sources(args))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    command = shlex.join(["python", "scripts/datasets/emoji_corpus.py", *argv])
    code = build(args, packages, cldr, command)
    print(f"({time.perf_counter() - start:.1f} s)")
    return code


def build(
    args: argparse.Namespace, packages: dict[str, Package], cldr: list[Package], command: str
) -> int:
    """Write the corpus folder from the packages; the exit status.

    Args:
        args: the checked command line.
        packages: style -> its icon package.
        cldr: the CLDR packages.
        command: the command line, for LICENSE.md.
    """
    out = Path(args.out)
    entries = read_corpus(packages, Namer(read_cldr(cldr)), args.limit)
    if args.force:
        clear_corpus(out)
    drawn, skipped = draw_all(entries, out, args.size, args.jobs)
    split = choose_split(drawn, args.seed, args.heldout_concepts, args.heldout_tones)
    parts = write_corpus(out, drawn, packages, split, args.seed)
    write_licences(out, packages, cldr, Counter(e.style for e in drawn), command)
    print(summary(drawn, skipped, parts, split))
    print(f"wrote {len(drawn)} images, skipped {len(skipped)} that failed to draw: {out}")
    return 0 if drawn else 1


if __name__ == "__main__":
    sys.exit(main())
