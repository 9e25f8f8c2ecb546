"""FHIR R4 output: a note's codes as a Bundle (type "collection") of Condition resources — category
encounter-diagnosis, the code in its ICD system, verification status "unconfirmed" (a suggestion, not
a decision), and the model's probability or score, review mark and evidence offsets as extensions."""

import re
import uuid

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
EXTENSION = "https://github.com/msmn/fhir/StructureDefinition/"  # this package's extensions: score, review, evidence


def label_set_system(codes: list[str]) -> str:
    """The ICD system of a label set: ICD-10-CM when a code starts with a letter other than E or V (the only
    letters of ICD-9-CM codes), else ICD-9-CM."""
    return ICD10CM if any(code[:1].isalpha() and code[:1].upper() not in "EV" for code in codes) else ICD9CM


def system_of(code: str, label_system: str) -> str:
    """A code's system URI: ICD-10-PCS for seven characters without a dot, ICD-9-CM for ICD-9 procedures
    (two digits, a dot), else the label set's."""
    if len(code) == 7 and code.isalnum():
        return ICD10PCS
    if re.fullmatch(r"\d{2}\.\d{0,2}", code):
        return ICD9CM
    return label_system


def condition(code: dict, note_id: str, label_system: str) -> dict:
    """One predicted code as a Condition."""
    extensions = [{"url": EXTENSION + ("probability" if code["probability"] is not None else "score"),
                   "valueDecimal": round(code["probability"] if code["probability"] is not None else code["score"], 6)}]
    if "review" in code:
        extensions.append({"url": EXTENSION + "review", "valueBoolean": code["review"]})
    extensions += [{"url": EXTENSION + "evidence", "extension": [
        {"url": "start", "valueInteger": span["start"]}, {"url": "end", "valueInteger": span["end"]},
        {"url": "weight", "valueDecimal": round(span["weight"], 6)}]} for span in code["evidence"]]
    coding = {"system": system_of(code["code"], label_system), "code": code["code"]}
    if code["description"]:
        coding["display"] = code["description"]
    return {
        "resourceType": "Condition",
        "extension": extensions,
        "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "unconfirmed"}]},
        "category": [{"coding": [{"system": CATEGORY, "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}]}],
        "code": {"coding": [coding]},
        "subject": {"display": f"the patient of note {note_id}"},
    }


def bundle(notes: list[tuple[str, list[dict]]], label_system: str) -> dict:
    """A Bundle of the Conditions of each (note id, predicted codes)."""
    entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": condition(code, note_id, label_system)}
               for note_id, codes in notes for code in codes]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}
