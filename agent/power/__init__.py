"""Site power control: one power budget for the whole fleet (design §9)."""
