"""Small word lists shipped with the suite (everything offline: no essay or book downloads).

Lowercase ASCII words only, so keys and answers survive any tokenizer and case-insensitive
matching. RULER draws needle keys from a noun/adjective vocabulary (wonderwords); these lists play
that role. bAbI-style entity lists serve the `facts` task.
"""

from __future__ import annotations

NOUNS = tuple(
    """
    apple anchor arrow badge basket beacon bell blanket bottle bridge brush bucket button cabin
    camera candle canyon carpet castle cloud clover comet compass cookie copper cotton crayon
    crystal curtain desert diamond dolphin dragon drum eagle engine falcon feather fern festival
    flute forest fountain galaxy garden glacier goblet granite harbor harp helmet hammer island
    jacket jungle kettle kitten ladder lantern lemon lighthouse lizard magnet maple marble meadow
    mirror monkey mountain needle ocean orchid otter paddle palace panda parrot pebble pencil
    pepper piano pillow planet pocket pond puzzle quartz rabbit radio raven ribbon river rocket
    saddle sailor scarf shadow shell shovel silver sparrow spider spoon statue summit sunset
    tablet teapot temple thunder tiger timber tower trumpet tulip tunnel turtle umbrella valley
    velvet violin volcano wagon walrus whistle willow window wizard yacht zebra
    """.split()
)

ADJECTIVES = tuple(
    """
    ancient bold brave bright calm clever cold cosmic crisp curious dark eager early fancy fierce
    fluffy fragile gentle giant golden grand green happy heavy hidden humble icy jolly kind lazy
    little lively lucky mellow mighty misty modern noble odd orange pale patient plain polite
    proud purple quick quiet rapid rare royal rusty sandy shiny silent simple sleepy smooth
    snowy soft solid spicy steady stormy sunny swift tall tender tiny vivid warm wild windy wise
    witty young
    """.split()
)

PEOPLE = tuple(
    """
    mary john sandra daniel julie fred bill emma oliver sophia liam ava noah mia lucas chloe ethan
    grace henry alice jack lily leo ruby max nora oscar ella hugo iris felix luna theo rosa ivan
    zoe otto vera
    """.split()
)

PLACES = tuple(
    """
    kitchen garden bedroom office hallway bathroom cellar attic library balcony garage studio
    pantry porch basement lobby chapel workshop greenhouse terrace
    """.split()
)

OBJECTS = tuple(
    """
    football apple key coin ring book map watch card letter pearl stamp ticket glove sock spoon
    feather marble shell candle pencil button badge medal compass whistle
    """.split()
)

CONTAINERS = tuple(
    """
    box bag basket chest crate drawer jar pouch sack suitcase trunk tin case bucket backpack
    envelope wallet purse barrel cupboard locker satchel carton canister
    """.split()
)

# RULER's noise haystack (NVIDIA/RULER, "repeat" haystack), split into words so the fitting can
# add or remove one word at a time.
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

assert len(set(NOUNS)) == len(NOUNS) and len(set(ADJECTIVES)) == len(ADJECTIVES)
assert not set(PEOPLE) & set(PLACES) and not set(OBJECTS) & set(CONTAINERS)
