"""ICD code formats: how codes are written in the label sets the builders make (CAML's ICD-9 format;
CodiEsp's ICD-10 codes are normalised in `codiesp.normalize_code`)."""


def format_icd9_code(code: str, is_diagnosis: bool, integer_procedures: bool = False) -> str:
    """CAML's code format: diagnoses get a dot after 3 characters (4 for E-codes) when longer;
    procedures always get a dot after 2 characters ("17" → "17."), after dropping their leading
    zeros with `integer_procedures` (CAML's pandas reading: "0151" → "15.1")."""
    code = code.replace(".", "").strip()
    if not is_diagnosis:
        if integer_procedures and code.isdigit():
            code = str(int(code))
        return f"{code[:2]}.{code[2:]}"
    split_at = 4 if code.startswith("E") else 3
    return f"{code[:split_at]}.{code[split_at:]}" if len(code) > split_at else code
