"""A small fixed set of hand-written MCQ items, each with a correct, reasoned path (Step 0 first) and its gold letter:
the PRM tests score each path against the same path with the final letter swapped."""

from pipelines.reasoning.template import ROOT_STEP

SWAP_CASES = [
    ("Which vitamin deficiency causes scurvy?\nA. Vitamin A\nB. Vitamin C\nC. Vitamin D\nD. Vitamin K",
     [ROOT_STEP, "Scurvy presents with bleeding gums and poor wound healing because collagen is not cross-linked.",
      "Collagen cross-linking needs ascorbic acid, which is vitamin C.", "The answer is B."], "B"),
    ("Which organism causes syphilis?\nA. Treponema pallidum\nB. Neisseria gonorrhoeae\nC. Chlamydia trachomatis\n"
     "D. Borrelia burgdorferi",
     [ROOT_STEP, "Syphilis is a sexually transmitted infection caused by a spirochete.",
      "The spirochete of syphilis is Treponema pallidum; Borrelia causes Lyme disease.", "The answer is A."], "A"),
    ("Which drug is the antidote for paracetamol overdose?\nA. Naloxone\nB. Flumazenil\nC. N-acetylcysteine\n"
     "D. Atropine",
     [ROOT_STEP, "Paracetamol overdose depletes glutathione in the liver and causes hepatic necrosis.",
      "N-acetylcysteine replenishes glutathione and is the antidote for paracetamol poisoning.",
      "The answer is C."], "C"),
    ("Which hormone is produced by the beta cells of the pancreas?\nA. Glucagon\nB. Somatostatin\nC. Insulin\n"
     "D. Pancreatic polypeptide",
     [ROOT_STEP, "The islets of Langerhans contain alpha, beta and delta cells.",
      "Beta cells secrete insulin, alpha cells secrete glucagon and delta cells secrete somatostatin.",
      "The answer is C."], "C"),
    ("Deficiency of which enzyme causes classic phenylketonuria?\nA. Tyrosinase\nB. Phenylalanine hydroxylase\n"
     "C. Homogentisate oxidase\nD. Galactose-1-phosphate uridyltransferase",
     [ROOT_STEP, "Phenylketonuria is an inborn error in which phenylalanine cannot be converted to tyrosine.",
      "That conversion is done by phenylalanine hydroxylase, the enzyme deficient in classic PKU.",
      "The answer is B."], "B"),
    ("Which nerve is injured in wrist drop?\nA. Median nerve\nB. Ulnar nerve\nC. Radial nerve\nD. Axillary nerve",
     [ROOT_STEP, "Wrist drop is the inability to extend the wrist and fingers.",
      "The wrist extensors are supplied by the radial nerve, often injured in a humeral shaft fracture.",
      "The answer is C."], "C"),
    ("Which electrolyte abnormality produces peaked T waves on the ECG?\nA. Hypokalaemia\nB. Hyperkalaemia\n"
     "C. Hypocalcaemia\nD. Hypomagnesaemia",
     [ROOT_STEP, "Tall, peaked T waves are the earliest ECG sign of a high serum potassium.",
      "A high serum potassium is hyperkalaemia; hypokalaemia gives flat T waves and U waves.", "The answer is B."],
     "B"),
    ("Which antibody class crosses the placenta?\nA. IgA\nB. IgM\nC. IgG\nD. IgE",
     [ROOT_STEP, "Only one antibody class is actively transported across the placenta by the neonatal Fc receptor.",
      "That class is IgG, which gives the newborn passive immunity; IgM is too large.", "The answer is C."], "C"),
]
