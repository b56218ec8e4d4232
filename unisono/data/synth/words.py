"""Word lists for the built-in sentence generator, by part of speech.

Written for unisono; common English words only, so espeak-ng pronounces them well and Whisper-style
recognisers can transcribe them.
"""

NOUNS = """
apple apron anchor ankle antelope apartment arch arm arrow artist attic avenue axe baby backpack badge
bag bakery balcony ball balloon banana band bank barn barrel basket bat bath battery beach beacon bean
bear beard bed bee beetle bell belt bench berry bicycle bird biscuit blanket blossom boat bone book boot
bottle bowl box bracelet branch bread brick bridge broom brother brush bubble bucket buffalo building
bull bus bush butter butterfly button cabin cabinet cable cake calendar camel camera camp candle cannon
canoe canvas canyon cap captain car card carpet carrot cart castle cat cave ceiling cellar chair chalk
channel cheese cherry chest chicken chimney chip chocolate church circle city clock cloud coat coconut
coffee coin collar comb comet compass computer cookie corn corner cottage couch cousin cow crab cradle
crane crayon creek cricket crown cup cupboard curtain cushion daisy dancer deer desert desk diamond
dinner dish doctor dog doll dolphin donkey door dragon drawer dress drum duck eagle ear earring egg
elbow elephant elevator engine envelope eraser fabric face factory falcon fan farm farmer feather fence
ferry field finger fire fish flag flame flower flute fog forest fork fountain fox frog fruit garage
garden gate giant giraffe glass glove goat gold goose grape grass guitar hammer hand harbor hat hawk
hedge helmet hill hippo hive horse hospital hotel house island jacket jar jelly jewel journal judge
jungle kettle key kitchen kite kitten knee knife ladder lake lamp lantern leaf lemon letter library
lighthouse lion lizard lobster lock log magnet mailbox map market mask meadow melon mirror monkey moon
mountain mouse mouth mug museum mushroom nail napkin necklace nest net notebook nurse oak ocean octopus
office onion orange orchard otter oven owl paddle pail painter palace pan panda paper parrot path peach
pear pebble pencil penguin pepper piano picture pie pig pillow pilot pine pipe pirate planet plate
pocket pond pony potato pumpkin puppet puppy queen quilt rabbit radio raft rainbow raven ribbon rice
river road robot rock rocket roof rope rose sailor salad sandwich saucer scarf school scissors seal
shadow shark sheep shelf shell ship shirt shoe shovel singer sister skirt sled snail snake sock sofa
soldier soup spider spoon squirrel stable stadium stage star station statue stone stool storm stove
street student submarine sugar suitcase sun swan sweater table tail teacher teapot telescope tent
thimble tiger toaster tomato tooth tower town toy tractor train tree truck trumpet tunnel turtle
umbrella uncle valley vase village violin volcano wagon wall wallet walrus watch waterfall whale wheel
whistle window wizard wolf worm yacht zebra
acorn album alley almond alarm ankle anthem atlas avocado bagel bamboo bandage banner barrel basin
bucket bugle cactus canal carriage cathedral cello cereal chapel chess cider clover cobra comet cork
costume crater crystal dagger dune easel fiddle fossil gallery garlic glacier goblet gravel hamster
harp hatchet helicopter hoof iceberg igloo ivory jaguar kayak koala lagoon lettuce lime llama lotus
mango maple marble meteor moose muffin mule nectar noodle olive orchid ostrich paddock pasta peacock
pelican pepper pickle pigeon pillar plum porch prism pudding quarry raisin reef saddle salmon sandal
scooter seashell shawl sparrow spinach sponge stork strawberry sunflower swamp sword tablet tambourine
tiger toad torch trolley tulip turnip tuxedo vine walnut weasel wheat willow windmill yogurt
""".split()

ADJECTIVES = """
able ancient angry anxious awkward bad bald beautiful best better big bitter black bland blue bold
brave brief bright brilliant broad broken brown bumpy busy calm careful careless cheap cheerful chilly
clean clever cloudy clumsy cold colorful comfortable common cool crazy creamy crisp crooked cruel
curious curly cute damp dark deep delicate delightful dense dirty dizzy dry dull dusty eager early easy
elegant empty enormous excited expensive faint fair famous fancy fast fat fierce filthy firm flat
fluffy foolish fragile free fresh friendly frozen full funny fuzzy gentle giant gigantic glad gloomy
golden good gorgeous graceful grand gray greasy great green grumpy hairy handsome happy hard harsh
healthy heavy helpful hollow honest hot huge humble hungry icy immense important innocent jolly juicy
kind large late lazy light little lively lonely long loose loud lovely low lucky magnificent massive
mighty modern moist narrow nasty naughty neat nervous new nice noisy odd old orange ordinary pale
patient perfect pink plain plastic pleasant polite poor powerful precious pretty proud purple quick
quiet rapid rare raw red rich ripe rough round royal rude rusty sad salty scary shallow sharp shiny
short shy silent silly silver simple skinny sleepy slim slow small smart smooth soft solid sour spicy
splendid square steep sticky stiff strange strong stupid sturdy sudden sunny super sweet swift tall
tame tasty tender terrible thick thin thirsty tidy tiny tired tough tricky ugly upset useful vast
violet warm wasteful weak wealthy weary wet white wicked wide wild wise wonderful wooden yellow young
zealous amber bashful breezy brisk chubby crimson dainty drowsy fearless feeble fragrant frosty
gleaming grassy humid jagged knotty lanky leafy marvelous misty muddy nimble plump prickly quaint
rosy rustic rusty sandy scruffy shaggy sleek snowy sparkling speckled spotted stormy striped sunlit
tangled velvet wobbly wrinkled
""".split()

# (base, past, third person, -ing) for transitive verbs; regular forms are derived.
_VERBS_REGULAR = """
accept admire adopt allow answer arrange attach attack avoid bake borrow bounce brush bury call carry
change chase check clean climb collect color count cover crack crush deliver destroy discover dust
enjoy explore fill find fix follow gather grab greet guard hammer handle help hug inspect invent jump
kick kiss lift like lock love mend mix move offer open order own pack paint pick place plant play polish
pour pull punch push reach repair rescue return roll rub save scrub search share shout smell sort
splash squeeze stack start steer stir study taste test thank touch toss trace track trust turn twist
unlock unpack use visit walk wash watch wave weigh whistle wipe wrap
""".split()

_VERBS_IRREGULAR = [
    ("bring", "brought"), ("build", "built"), ("buy", "bought"), ("catch", "caught"), ("choose", "chose"),
    ("draw", "drew"), ("drink", "drank"), ("drive", "drove"), ("eat", "ate"), ("feed", "fed"),
    ("find", "found"), ("forget", "forgot"), ("freeze", "froze"), ("give", "gave"), ("hide", "hid"),
    ("hold", "held"), ("keep", "kept"), ("leave", "left"), ("lend", "lent"), ("lose", "lost"),
    ("make", "made"), ("meet", "met"), ("read", "read"), ("ride", "rode"), ("see", "saw"),
    ("sell", "sold"), ("send", "sent"), ("shake", "shook"), ("sing", "sang"), ("steal", "stole"),
    ("sweep", "swept"), ("take", "took"), ("teach", "taught"), ("tear", "tore"), ("throw", "threw"),
    ("wear", "wore"), ("win", "won"), ("write", "wrote"), ("bend", "bent"), ("bite", "bit"),
    ("break", "broke"), ("dig", "dug"), ("fling", "flung"), ("grind", "ground"), ("hang", "hung"),
    ("sew", "sewed"), ("shine", "shone"), ("spin", "spun"), ("swing", "swung"), ("wind", "wound"),
]

INTRANSITIVE = [
    ("arrive", "arrived"), ("laugh", "laughed"), ("sleep", "slept"), ("smile", "smiled"), ("dance", "danced"),
    ("wait", "waited"), ("rest", "rested"), ("travel", "traveled"), ("whisper", "whispered"),
    ("shiver", "shivered"), ("wander", "wandered"), ("yawn", "yawned"), ("sneeze", "sneezed"),
    ("float", "floated"), ("glow", "glowed"), ("grow", "grew"), ("run", "ran"), ("swim", "swam"),
    ("fly", "flew"), ("fall", "fell"), ("sit", "sat"), ("stand", "stood"), ("hum", "hummed"),
    ("cry", "cried"), ("jog", "jogged"), ("hurry", "hurried"), ("listen", "listened"), ("pause", "paused"),
    ("vanish", "vanished"), ("sparkle", "sparkled"), ("tremble", "trembled"), ("wobble", "wobbled"),
]

ADVERBS = """
quickly slowly quietly loudly carefully happily sadly gently suddenly eagerly calmly bravely boldly
proudly softly rarely often always never sometimes usually badly barely briskly cheerfully clearly
closely deeply easily fairly firmly freely gladly gracefully greatly honestly kindly lazily lightly
madly merrily neatly nearly nervously openly patiently politely promptly quietly rapidly really
roughly rudely safely seldom sharply shyly silently simply smoothly steadily sternly strongly swiftly
tenderly thankfully tightly truly warmly weakly wildly wisely
""".split()

NAMES = """
Adam Alice Amelia Anna Arthur Ben Bella Carl Chloe Clara Daniel David Diana Edward Elena Ella Emily
Emma Eric Ethan Felix Fiona Frank George Grace Hannah Harry Helen Henry Isaac Iris Jack Jacob James
Jane Jasmine John Julia Kate Kevin Laura Leo Lily Lucas Lucy Luke Maria Mark Martin Mary Max Mia Nancy
Nathan Nina Noah Oliver Olivia Oscar Paul Peter Rachel Robert Rose Ruby Ryan Sam Sarah Simon Sophia
Sophie Steve Susan Thomas Tom Victor Victoria William Zoe
""".split()

PROFESSIONS = """
baker barber builder butcher carpenter cashier chef dentist doctor driver farmer firefighter fisherman
florist gardener guard janitor judge lawyer librarian mechanic miner musician nurse painter pilot
plumber poet professor sailor scientist sculptor singer soldier surgeon tailor teacher waiter writer
""".split()

RELATIVES = "aunt uncle cousin brother sister mother father grandmother grandfather neighbor friend".split()

PLACES = """
park garden kitchen market station harbor library museum forest beach village valley river lake hill
bridge castle school hospital office bakery farm meadow island tower square street cottage theater
""".split()

PREPOSITIONS = "near behind beside under above inside across along around beyond past toward".split()

TIMES = """
yesterday today tomorrow tonight|last night|this morning|this evening|on Monday|on Tuesday|on Wednesday
|on Thursday|on Friday|on Saturday|on Sunday|after lunch|before dinner|at noon|at midnight|in the spring
|in the summer|in the autumn|in the winter|every morning|last week|next week|at sunrise|at sunset
""".replace("\n", "|").replace("yesterday today tomorrow tonight", "yesterday|today|tomorrow|tonight").split("|")
TIMES = [t.strip() for t in TIMES if t.strip()]

NUMBERS = "two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty".split()

COLORS = "red blue green yellow purple orange pink brown black white gray golden silver".split()


def _regular_past(v: str) -> str:
    if v.endswith("e"):
        return v + "d"
    if v.endswith("y") and v[-2] not in "aeiou":
        return v[:-1] + "ied"
    if v in ("hug", "mop", "pat", "rub", "scrub", "stir", "drum", "plan", "trap", "grab", "jog", "hum"):
        return v + v[-1] + "ed"
    return v + "ed"


def third_person(v: str) -> str:
    if v.endswith(("s", "sh", "ch", "x", "z", "o")):
        return v + "es"
    if v.endswith("y") and v[-2] not in "aeiou":
        return v[:-1] + "ies"
    return v + "s"


def gerund(v: str) -> str:
    if v.endswith("ie"):
        return v[:-2] + "ying"
    if v.endswith("e") and not v.endswith(("ee", "ye", "oe")):
        return v[:-1] + "ing"
    if v in ("hug", "rub", "scrub", "stir", "drum", "grab", "jog", "hum", "dig", "spin", "swim", "run",
             "sit", "win", "bet", "cut", "hit", "get", "put", "shop", "stop", "chop"):
        return v + v[-1] + "ing"
    return v + "ing"


def plural(n: str) -> str:
    irregular = {"mouse": "mice", "goose": "geese", "tooth": "teeth", "child": "children", "sheep": "sheep",
                 "deer": "deer", "fish": "fish", "moose": "moose", "knife": "knives", "leaf": "leaves",
                 "wolf": "wolves", "shelf": "shelves", "scissors": "scissors", "buffalo": "buffaloes",
                 "potato": "potatoes", "tomato": "tomatoes", "volcano": "volcanoes", "hoof": "hooves",
                 "calf": "calves", "fisherman": "fishermen", "man": "men", "woman": "women", "salmon": "salmon"}
    if n in irregular:
        return irregular[n]
    if n.endswith(("s", "sh", "ch", "x", "z")):
        return n + "es"
    if n.endswith("y") and n[-2] not in "aeiou":
        return n[:-1] + "ies"
    return n + "s"


TRANSITIVE = [(v, _regular_past(v)) for v in _VERBS_REGULAR] + _VERBS_IRREGULAR
# keep one entry per base form (the irregular one wins)
TRANSITIVE = list({v: (v, p) for v, p in TRANSITIVE}.values())
NOUNS = sorted(set(NOUNS))
ADJECTIVES = sorted(set(ADJECTIVES))
ADVERBS = sorted(set(ADVERBS))
