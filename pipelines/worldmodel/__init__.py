"""The tumour world model's data and training: tumour-centred crop cache (`crops`), the change region where the
dynamics model may alter the image (`regions`), and the three trainers (`train`). See docs/worldmodel_design.md."""
