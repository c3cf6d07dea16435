//! The SAS emoji table of the spec ([spec]): index (6 bits of the SAS) to
//! symbol and English name. Both sides derive the indices with vodozemac;
//! this table only renders them.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#sas-method-emoji

/// One emoji of the short authentication string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emoji {
    /// The emoji itself.
    pub symbol: &'static str,
    /// Its English name, as the spec gives it.
    pub name: &'static str,
}

/// The spec's 64 emoji, in index order.
pub(crate) const EMOJI: [(&str, &str); 64] = [
    ("🐶", "Dog"),
    ("🐱", "Cat"),
    ("🦁", "Lion"),
    ("🐎", "Horse"),
    ("🦄", "Unicorn"),
    ("🐷", "Pig"),
    ("🐘", "Elephant"),
    ("🐰", "Rabbit"),
    ("🐼", "Panda"),
    ("🐓", "Rooster"),
    ("🐧", "Penguin"),
    ("🐢", "Turtle"),
    ("🐟", "Fish"),
    ("🐙", "Octopus"),
    ("🦋", "Butterfly"),
    ("🌷", "Flower"),
    ("🌳", "Tree"),
    ("🌵", "Cactus"),
    ("🍄", "Mushroom"),
    ("🌏", "Globe"),
    ("🌙", "Moon"),
    ("☁️", "Cloud"),
    ("🔥", "Fire"),
    ("🍌", "Banana"),
    ("🍎", "Apple"),
    ("🍓", "Strawberry"),
    ("🌽", "Corn"),
    ("🍕", "Pizza"),
    ("🎂", "Cake"),
    ("❤️", "Heart"),
    ("😀", "Smiley"),
    ("🤖", "Robot"),
    ("🎩", "Hat"),
    ("👓", "Glasses"),
    ("🔧", "Spanner"),
    ("🎅", "Santa"),
    ("👍", "Thumbs Up"),
    ("☂️", "Umbrella"),
    ("⌛", "Hourglass"),
    ("⏰", "Clock"),
    ("🎁", "Gift"),
    ("💡", "Light Bulb"),
    ("📕", "Book"),
    ("✏️", "Pencil"),
    ("📎", "Paperclip"),
    ("✂️", "Scissors"),
    ("🔒", "Lock"),
    ("🔑", "Key"),
    ("🔨", "Hammer"),
    ("☎️", "Telephone"),
    ("🏁", "Flag"),
    ("🚂", "Train"),
    ("🚲", "Bicycle"),
    ("✈️", "Aeroplane"),
    ("🚀", "Rocket"),
    ("🏆", "Trophy"),
    ("⚽", "Ball"),
    ("🎸", "Guitar"),
    ("🎺", "Trumpet"),
    ("🔔", "Bell"),
    ("⚓", "Anchor"),
    ("🎧", "Headphones"),
    ("📁", "Folder"),
    ("📌", "Pin"),
];

/// The emoji for the seven 6-bit indices vodozemac derived.
pub(crate) fn emoji(indices: [u8; 7]) -> [Emoji; 7] {
    indices.map(|index| {
        // Indices are 6 bits: always inside the 64-entry table.
        let (symbol, name) = EMOJI[usize::from(index & 63)];
        Emoji { symbol, name }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_64_distinct_emoji_and_names() {
        let symbols: std::collections::BTreeSet<_> = EMOJI.iter().map(|(s, _)| s).collect();
        let names: std::collections::BTreeSet<_> = EMOJI.iter().map(|(_, n)| n).collect();
        assert_eq!((symbols.len(), names.len()), (64, 64));
        // Spot checks against the spec's table.
        assert_eq!(EMOJI[0], ("🐶", "Dog"));
        assert_eq!(EMOJI[34], ("🔧", "Spanner"));
        assert_eq!(EMOJI[63], ("📌", "Pin"));
    }

    /// The names in index order, from the spec's `sas-emoji.json`
    /// (matrix-org/matrix-spec, data-definitions), which matrix-rust-sdk's
    /// table follows too: another order would show other clients other words.
    #[test]
    fn the_names_follow_the_spec_in_order() {
        const SPEC: &str = "Dog Cat Lion Horse Unicorn Pig Elephant Rabbit Panda Rooster \
            Penguin Turtle Fish Octopus Butterfly Flower Tree Cactus Mushroom Globe Moon Cloud \
            Fire Banana Apple Strawberry Corn Pizza Cake Heart Smiley Robot Hat Glasses Spanner \
            Santa Thumbs_Up Umbrella Hourglass Clock Gift Light_Bulb Book Pencil Paperclip \
            Scissors Lock Key Hammer Telephone Flag Train Bicycle Aeroplane Rocket Trophy Ball \
            Guitar Trumpet Bell Anchor Headphones Folder Pin";
        let names: Vec<String> = EMOJI.iter().map(|(_, n)| n.replace(' ', "_")).collect();
        let spec: Vec<&str> = SPEC.split_whitespace().collect();
        assert_eq!(names, spec);
        // Symbols that take a variation selector carry it, as the spec's do.
        assert_eq!(EMOJI[21].0, "\u{2601}\u{fe0f}");
        assert_eq!(EMOJI[53].0, "\u{2708}\u{fe0f}");
    }
}
